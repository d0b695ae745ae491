"""The preflight play against this machine (local connection, nothing changed): bad inventory values
stop the run with a message naming each one, and good ones pass."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.playbooks import REPO, ansible_playbook

pytestmark = pytest.mark.slow


def preflight(tmp_path: Path, extra_vars: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    # Preflight reads the box as root via become; here the test runs as whoever runs pytest.
    return ansible_playbook(tmp_path, REPO / "playbooks" / "preflight.yml",
                            {"edge": {"children": {"cpu": {"hosts": {"this-box": None}}}}},
                            {"ansible_become": False, "platform_override": "cpu", **extra_vars})


def test_bad_image_fetch_networks_stop_the_run_before_any_change(tmp_path: Path) -> None:
    run = preflight(tmp_path, {"gateway_image_fetch_networks": ["192.168.10.0/24", "cameras.lan", "fd00::/8"]})
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert "gateway_image_fetch_networks: `cameras.lan` is not an IP network" in output
    assert "192.168.10.0/24` is not" not in output and "fd00::/8` is not" not in output


def test_good_image_fetch_networks_pass(tmp_path: Path) -> None:
    run = preflight(tmp_path, {"gateway_image_fetch_networks": ["192.168.10.0/24", "10.0.0.7", "fd00::/8"]})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "failed=0" in run.stdout
