"""The preflight play against this machine (local connection, nothing changed): bad inventory values
stop the run with a message naming each one, and good ones pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def preflight(tmp_path: Path, extra_vars: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"edge": {"children": {"cpu": {"hosts": {"this-box": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}}}))
    variables = tmp_path / "vars.yml"
    # Preflight reads the box as root via become; here the test runs as whoever runs pytest.
    variables.write_text(yaml.safe_dump({"ansible_become": False, "platform_override": "cpu", **extra_vars}))
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), "-e", f"@{variables}",
         str(REPO / "playbooks" / "preflight.yml")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "ANSIBLE_NOCOLOR": "1",
             "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "HOME": str(tmp_path)},
    )


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
