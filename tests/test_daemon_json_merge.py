"""docker_network's daemon.json merge (roles/docker_network/vars/main.yml) on the files real boxes have:
log rotation and live-restore are added, nothing already there is lost, and a log driver that
would refuse json-file's options gets none."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.playbooks import REPO, ansible_playbook

pytestmark = pytest.mark.slow

ROLE = REPO / "roles" / "docker_network"
# What `nvidia-ctk runtime configure` and an operator leave in the file.
NVIDIA = {"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}}


def merged(tmp_path: Path, current: dict[str, Any], variables: dict[str, Any] | None = None) -> dict[str, Any]:
    out = tmp_path / "merged.json"
    playbook = tmp_path / "merge.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "all", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "tasks": [{"ansible.builtin.copy": {"content": "{{ _docker_network_daemon_merged | to_json }}",
                                            "dest": str(out), "mode": "0644"}}],
    }]))
    run = ansible_playbook(tmp_path, playbook, {"all": {"hosts": {"this-box": None}}},
                           {"_docker_network_daemon_current": current, **(variables or {})})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return json.loads(out.read_text())


def test_rotation_and_live_restore_are_merged_in_and_nothing_is_lost(tmp_path: Path) -> None:
    current = {**NVIDIA, "registry-mirrors": ["https://mirror.lan"], "log-opts": {"labels": "site"}}
    result = merged(tmp_path, current, {"docker_network_dns_servers": ["10.0.0.53"]})
    assert result == {**NVIDIA, "registry-mirrors": ["https://mirror.lan"], "dns": ["10.0.0.53"],
                      "live-restore": True, "log-opts": {"labels": "site", "max-size": "10m", "max-file": "3"}}


def test_a_journald_box_gets_no_json_file_options(tmp_path: Path) -> None:
    # dockerd refuses to start with max-size under journald: the role must not add it there.
    result = merged(tmp_path, {"log-driver": "journald"})
    assert result == {"log-driver": "journald", "live-restore": True}


def test_the_operator_can_turn_both_off(tmp_path: Path) -> None:
    result = merged(tmp_path, NVIDIA, {"docker_network_live_restore": False, "docker_network_log_max_size": ""})
    assert result == {**NVIDIA, "live-restore": False}
