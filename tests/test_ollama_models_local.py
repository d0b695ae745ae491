"""The ollama role's model step (roles/ollama/tasks/models.yml) against an Ollama stand-in on this
machine: missing models are pulled, and with ollama_prune_models the ones the inventory no longer
names are deleted, while those it names ("llama3" for "llama3:latest" too) stay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.playbooks import REPO, ansible_playbook
from tests.standins.fixtures import StandinServer

pytestmark = pytest.mark.slow

INVENTORY_MODELS = ["qwen3:4b-instruct", "llama3"]


def run_models_step(tmp_path: Path, port: int, variables: dict[str, Any]) -> None:
    playbook = tmp_path / "models.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "all", "gather_facts": False,
        "tasks": [{"ansible.builtin.include_role": {"name": "ollama", "tasks_from": "models.yml"}}],
    }]))
    resolved = [{"name": name, "engine": "ollama"} for name in INVENTORY_MODELS]
    run = ansible_playbook(tmp_path, playbook, {"all": {"hosts": {"this-box": None}}},
                           {"ollama_port": port, "vilms_models_resolved": resolved, "vilms_platform": "cpu",
                            "ollama_api_retries": 5, "ollama_api_delay": 1, **variables},
                           env={"ANSIBLE_ROLES_PATH": str(REPO / "roles")})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def names(server: StandinServer) -> set[str]:
    return {model["name"] for model in httpx.get(server.url + "/api/tags").json()["models"]}


@pytest.mark.parametrize("prune", [True, False], ids=["prune", "keep"])
def test_models_the_inventory_dropped_are_deleted_only_when_asked(tmp_path: Path, prune: bool) -> None:
    with StandinServer.ollama(models=["llama3:latest", "gemma3:1b", "old-vlm:4b"]) as server:
        run_models_step(tmp_path, server.port, {"ollama_prune_models": prune})
        kept = {"qwen3:4b-instruct", "llama3:latest"}
        assert names(server) == (kept if prune else kept | {"gemma3:1b", "old-vlm:4b"})
