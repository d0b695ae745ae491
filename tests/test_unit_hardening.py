"""The gateway's systemd unit, rendered by the role itself (its template, defaults and vars, and the
repository's inventory group_vars) for each platform, is rated an exposure of 2.0 or lower by
``systemd-analyze security``, and keeps the directives a review would look for."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.playbooks import REPO, ansible_playbook

pytestmark = pytest.mark.slow

THRESHOLD = 2.0
KEY = "sk-unit-0123456789abcdef"
# Platform profiles as the inventory ships them; dgpu with CUDA embeddings, the widest of them.
PROFILES: dict[str, dict[str, Any]] = {
    "cpu": {},
    "dgpu-cuda-embeddings": {"gateway_embedding_enabled": True, "gateway_embedding_device": "cuda"},
    "jetson": {},
    "jetson-cuda-embeddings": {"gateway_embedding_enabled": True, "gateway_embedding_device": "cuda"},
}
_RENDER = {"name": "Render", "ansible.builtin.include_role": {"name": "gateway", "tasks_from": "service.yml"}}
_PLAY = [{"name": "Render the unit", "hosts": "all", "gather_facts": False, "tasks": [_RENDER]}]


def render_unit(tmp_path: Path, profile: str) -> str:
    """The unit ``service.yml`` would install, from the template task's diff in check mode."""
    platform = profile.split("-")[0]
    (tmp_path / "group_vars").symlink_to(REPO / "inventory" / "group_vars")
    playbook = tmp_path / "render.yml"
    playbook.write_text(yaml.safe_dump(_PLAY, sort_keys=False))
    run = ansible_playbook(
        tmp_path, playbook, {"all": {"children": {"edge": {"children": {platform: {"hosts": {"box": None}}}}}}},
        {"vilms_platform": platform, "vault_gateway_api_keys": [KEY], **PROFILES[profile]},
        env={"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"}, options=("--check", "--diff"),
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    tasks = json.loads(run.stdout)["plays"][0]["tasks"]
    installed = next(t for t in tasks if t["task"]["name"].endswith("Install the systemd unit"))
    return str(installed["hosts"]["box"]["diff"][0]["after"])


def exposure(unit: Path) -> tuple[int, float, str]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd")
    # --threshold takes tenths (0-100): 2.0 is 20. Offline mode needs no running systemd.
    run = subprocess.run([analyze, "security", "--offline=yes", f"--threshold={round(THRESHOLD * 10)}", "--no-pager",
                          str(unit)],
                         capture_output=True, text=True, timeout=120)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", run.stdout + run.stderr)
    assert found, run.stdout[-3000:] + run.stderr[-3000:]
    return run.returncode, float(found.group(1)), run.stdout


@pytest.fixture(scope="module", params=list(PROFILES))
def unit(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp(request.param)
    path = tmp / "vilms-gateway.service"
    path.write_text(render_unit(tmp, request.param))
    return request.param, path


def test_the_unit_is_rated_an_exposure_of_two_or_lower(unit: tuple[str, Path]) -> None:
    profile, path = unit
    rc, level, report = exposure(path)
    assert level <= THRESHOLD and rc == 0, f"{profile}: exposure {level}\n{report}"


def test_the_unit_keeps_the_directives_that_confine_it(unit: tuple[str, Path]) -> None:
    profile, path = unit
    lines = path.read_text().splitlines()
    # Jetson's GPU nodes belong to group video, which a user namespace would not map.
    users = "PrivateUsers=no" if profile == "jetson-cuda-embeddings" else "PrivateUsers=yes"
    # The CUDA driver reads /proc/driver/nvidia.
    proc = "ProcSubset=all" if profile.endswith("cuda-embeddings") else "ProcSubset=pid"
    for directive in ("ProtectProc=invisible", proc, users, "RemoveIPC=yes",
                      "DevicePolicy=closed", "IPAddressDeny=any", "UMask=0077", "SystemCallFilter=@system-service",
                      "SystemCallArchitectures=native", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX"):
        assert directive in lines, f"{profile}: {directive} missing"
    allow = next(line for line in lines if line.startswith("IPAddressAllow=")).split("=", 1)[1]
    assert "localhost" in allow.split() and "192.168.0.0/16" in allow.split()
    stop = int(next(line for line in lines if line.startswith("TimeoutStopSec=")).split("=")[1])
    assert stop > 30, "systemd would kill the end of a 30 s drain"
    devices = [line.split("=", 1)[1] for line in lines if line.startswith("DeviceAllow=")]
    if profile == "dgpu-cuda-embeddings":
        assert "PrivateDevices=no" in lines
        assert {"/dev/nvidiactl rw", "/dev/nvidia-uvm rw", "/dev/nvidia-uvm-tools rw", "/dev/nvidia-modeset rw",
                "char-nvidia-frontend rw"} <= set(devices)
    elif profile == "jetson-cuda-embeddings":
        assert "PrivateDevices=no" in lines and "SupplementaryGroups=video" in lines
        assert {"/dev/nvmap rw", "/dev/nvhost-ctrl-gpu rw"} <= set(devices)
    else:
        assert "PrivateDevices=yes" in lines and devices == []
