"""The gateway role's health gate (roles/gateway/tasks/health.yml) run by ansible-playbook against a
served gateway and an Ollama stand-in on this machine.

The fault is the one ollama#12819 describes: Ollama 0.12.6 with qwen3-vl's files present (pulled by a
newer Ollama, then the image was rolled back) lists the model in /api/tags and /v1/models, and fails
every completion with HTTP 500 "unable to load model: <blob>". A gate that only lists the models
passes that box; the gate must fail it and name the model."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.gateway_harness import gateway_config
from tests.playbooks import REPO, ansible_playbook
from tests.served_gateway import serve
from tests.standins.fixtures import StandinServer

pytestmark = pytest.mark.slow

KEY = "sk-health-gate-0123456789"
LLM = {"name": "qwen3:4b-instruct", "type": "llm", "engine": "ollama"}
VLM = {"name": "qwen3-vl:4b-instruct", "type": "vlm", "engine": "ollama"}
EMBEDDING = {"name": "nomic-embed-text", "type": "embedding", "engine": "ollama"}


def run_health_gate(tmp_path: Path, gateway_url: str, models: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "health.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "all", "gather_facts": False,
        "tasks": [{"ansible.builtin.include_role": {"name": "gateway", "tasks_from": "health.yml"}}],
    }]))
    port = int(gateway_url.rsplit(":", 1)[1])
    return ansible_playbook(tmp_path, playbook, {"all": {"hosts": {"this-box": None}}},
                            {"gateway_host": "127.0.0.1", "gateway_port": port, "gateway_api_keys": [KEY],
                             "vilms_models_resolved": models, "vilms_platform": "cpu",
                             "gateway_health_retries": 5, "gateway_health_delay": 1,
                             "gateway_health_chat_timeout": 60},
                            env={"ANSIBLE_ROLES_PATH": str(REPO / "roles")})


def served_box(tmp_path: Path, ollama: StandinServer, models: list[dict[str, Any]]) -> Any:
    return serve(gateway_config(models, ollama=[ollama.url], platform="cpu", gateway={"api-keys": [KEY]}), tmp_path)


def test_a_listed_model_the_engine_cannot_load_fails_the_gate_by_name(tmp_path: Path) -> None:
    models = [LLM, VLM, EMBEDDING]
    with (StandinServer.ollama(models=[m["name"] for m in models], engine_version="0.12.6") as ollama,
          served_box(tmp_path, ollama, models) as gateway):
        run = run_health_gate(tmp_path, gateway.url, models)
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    # The list step passed: the gateway is up and lists every model; the completion found the fault.
    assert "Chat models on this-box that do not answer a completion through the gateway:" in output, output[-3000:]
    assert "qwen3-vl:4b-instruct (HTTP 5" in output and "unable to load model" in output, output[-3000:]
    assert "qwen3:4b-instruct (HTTP" not in output
    # The key the gate sent never reaches the output.
    assert KEY not in output


def test_models_the_engine_can_run_pass_the_gate(tmp_path: Path) -> None:
    models = [LLM, VLM, EMBEDDING]
    with (StandinServer.ollama(models=[m["name"] for m in models], engine_version="0.12.7") as ollama,
          served_box(tmp_path, ollama, models) as gateway):
        run = run_health_gate(tmp_path, gateway.url, models)
        asked = sorted(str(body["model"]) for path, body in ollama.requests if "chat" in path and body)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "2 chat models answered a completion" in run.stdout
    # One completion per chat model, none for the embedding model.
    assert asked == sorted([LLM["name"], VLM["name"]])
