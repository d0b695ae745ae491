"""What the ollama role asks Docker for (roles/ollama/vars/main.yml with its defaults), per box:
the official image with JETSON_JETPACK on Jetson, dustynv's image only when asked and then with a
command that keeps the server in the foreground, and the fleet settings in the environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.playbooks import REPO, ansible_playbook

pytestmark = pytest.mark.slow

ROLE = REPO / "roles" / "ollama"
JETSON = {"vilms_platform": "jetson", "vilms_l4t_release": "36.4.0", "vilms_jetpack_major": 6,
          "vilms_docker_has_nvidia_runtime": True}


def container(tmp_path: Path, facts: dict[str, Any]) -> dict[str, Any]:
    out = tmp_path / "container.json"
    playbook = tmp_path / "container.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "all", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "tasks": [{"ansible.builtin.copy": {
            "content": "{{ {'image': _ollama_image, 'env': _ollama_env, 'dustynv': _ollama_dustynv | bool,"
                       " 'command': _ollama_command} | to_json }}",
            "dest": str(out), "mode": "0644"}}],
    }]))
    run = ansible_playbook(tmp_path, playbook, {"all": {"hosts": {"this-box": None}}}, facts)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def test_a_jetson_runs_the_official_image_with_its_jetpack(tmp_path: Path) -> None:
    result = container(tmp_path, JETSON)
    assert result["image"] == "ollama/ollama:0.13.1"
    assert result["env"]["JETSON_JETPACK"] == "6"
    assert not result["dustynv"]  # the image's own ENTRYPOINT/CMD (`ollama serve`) stays


def test_dustynv_is_opt_in_and_runs_the_server_in_the_foreground(tmp_path: Path) -> None:
    result = container(tmp_path, {**JETSON, "ollama_jetson_image_source": "dustynv"})
    assert result["image"] == "dustynv/ollama:r36.4.0"
    assert result["dustynv"]
    assert result["command"][:2] == ["/bin/bash", "-c"] and "exec ollama serve" in result["command"][2]
    assert "start_ollama" not in result["command"][2]


def test_fleet_settings_reach_the_container_with_edge_defaults(tmp_path: Path) -> None:
    env = container(tmp_path, {"vilms_platform": "cpu", "ollama_num_parallel": 2})["env"]
    fleet = {key: value for key, value in env.items() if key.startswith("OLLAMA_")
             and key not in ("OLLAMA_HOST", "OLLAMA_MODELS")}
    assert fleet == {
        "OLLAMA_KEEP_ALIVE": "5m", "OLLAMA_MAX_LOADED_MODELS": "1", "OLLAMA_NUM_PARALLEL": "2",
        "OLLAMA_CONTEXT_LENGTH": "4096", "OLLAMA_FLASH_ATTENTION": "1"}
    assert "JETSON_JETPACK" not in env and "NVIDIA_VISIBLE_DEVICES" not in env
