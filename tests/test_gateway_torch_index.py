"""Which torch the gateway role's build asks for (roles/gateway/vars/main.yml, _gateway_pip_args): the
rule of testbed/torch-pip-args. A box without an NVIDIA GPU whose embeddings run in the gateway gets
PyTorch's CPU index (not PyPI's multi-GB CUDA build) when the index answers the controller; the
operator's own gateway_pip_args always win."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.playbooks import REPO, ansible_playbook
from tests.served_gateway import free_port

pytestmark = pytest.mark.slow

ROLE = REPO / "roles" / "gateway"
EMBEDDINGS_ON = {"gateway_embedding_enabled": True}


def pip_args(tmp_path: Path, index: str, variables: dict[str, Any]) -> list[str]:
    playbook = tmp_path / "show.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "all", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "tasks": [{"ansible.builtin.debug": {"msg": "PIP-ARGS {{ _gateway_pip_args | to_json }}"}}],
    }]))
    run = ansible_playbook(tmp_path, playbook, {"all": {"hosts": {"this-box": None}}},
                           {"_gateway_torch_cpu_index": index, **variables})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    line = next(line for line in run.stdout.splitlines() if "PIP-ARGS " in line)
    return list(json.loads(line.split("PIP-ARGS ", 1)[1].rstrip('"').replace('\\"', '"')))


def test_a_box_without_a_gpu_gets_the_cpu_index_for_its_embeddings(tmp_path: Path, cpu_index: str) -> None:
    assert pip_args(tmp_path, cpu_index, {"vilms_platform": "cpu", **EMBEDDINGS_ON}) == ["--extra-index-url", cpu_index]


@pytest.mark.parametrize("variables", [
    {"vilms_platform": "dgpu", **EMBEDDINGS_ON},
    {"vilms_platform": "cpu"},
    {"vilms_platform": "cpu", **EMBEDDINGS_ON, "gateway_embedding_base_url": "http://127.0.0.1:11434/v1"},
], ids=["dgpu box: CUDA torch", "embeddings off: no torch", "remote embeddings: no torch"])
def test_boxes_that_need_no_cpu_torch_keep_the_default_sources(tmp_path: Path, cpu_index: str,
                                                              variables: dict[str, Any]) -> None:
    assert pip_args(tmp_path, cpu_index, variables) == []


def test_an_index_that_does_not_answer_is_not_added(tmp_path: Path) -> None:
    # pip would retry an unreachable index for every requirement; an offline controller keeps its own sources.
    closed = f"http://127.0.0.1:{free_port()}/whl/cpu"
    assert pip_args(tmp_path, closed, {"vilms_platform": "cpu", **EMBEDDINGS_ON}) == []


def test_the_operators_pip_args_win(tmp_path: Path, cpu_index: str) -> None:
    mine = ["--index-url", "https://pypi.example.lan/simple"]
    assert pip_args(tmp_path, cpu_index, {"vilms_platform": "cpu", **EMBEDDINGS_ON, "gateway_pip_args": mine}) == mine
