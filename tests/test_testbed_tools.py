"""The small tools `make setup`, `make test` and the demo lean on: the torch source decision
(testbed/torch-pip-args), the totals line (.ci/totals.py) and the progress wrapper (testbed/talk)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def torch_args(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return subprocess.run([sys.executable, str(REPO / "testbed" / "torch-pip-args")], capture_output=True,
                          text=True, timeout=30, env={**clean, "PIP_CONFIG_FILE": os.devnull, **env})


def test_local_torch_wheel_is_preferred(tmp_path: Path, cpu_index: str) -> None:
    (tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    run = torch_args({"PIP_FIND_LINKS": str(tmp_path), "VILMS_TORCH_CPU_INDEX": cpu_index})
    assert run.stdout.split() == ["torch==2.13.0"]
    assert "local wheel" in run.stderr


@pytest.mark.skipif(os.path.exists("/proc/driver/nvidia/version"), reason="this machine has an NVIDIA GPU")
def test_no_gpu_and_a_reachable_cpu_index_gives_the_cpu_build(tmp_path: Path, cpu_index: str) -> None:
    run = torch_args({"PIP_FIND_LINKS": str(tmp_path), "VILMS_TORCH_CPU_INDEX": cpu_index,
                      "PATH": "/usr/bin:/bin"})
    assert run.stdout.split() == ["torch==2.13.0+cpu", "--extra-index-url", cpu_index]


@pytest.mark.skipif(os.path.exists("/proc/driver/nvidia/version"), reason="this machine has an NVIDIA GPU")
def test_unreachable_cpu_index_says_what_it_downloads(tmp_path: Path) -> None:
    run = torch_args({"PIP_FIND_LINKS": str(tmp_path), "VILMS_TORCH_CPU_INDEX": "http://127.0.0.1:9/whl/cpu",
                      "PATH": "/usr/bin:/bin"})
    assert run.stdout.split() == ["torch==2.13.0"]
    assert "WARNING" in run.stderr and "CUDA build" in run.stderr and "GB" in run.stderr


def test_totals_sum_junit_and_stage_records(tmp_path: Path) -> None:
    (tmp_path / "unit.xml").write_text(
        '<testsuites><testsuite tests="10" failures="1" errors="1" skipped="3"/></testsuites>')
    (tmp_path / "integration.xml").write_text('<testsuite tests="2" failures="0" errors="0" skipped="0"/>')
    (tmp_path / "checks.txt").write_text("passed lint\npassed molecule:cpu\nfailed molecule:jetson\n")
    run = subprocess.run([sys.executable, str(REPO / ".ci" / "totals.py"), str(tmp_path)],
                         capture_output=True, text=True, check=True)
    assert run.stdout == "ci: 9 passed, 3 failed, 3 skipped\n"


def test_talk_speaks_up_during_silence_and_keeps_the_exit_status() -> None:
    run = subprocess.run([sys.executable, str(REPO / "testbed" / "talk"), "step", "--", "sh", "-c",
                          "echo start; sleep 3; echo end; exit 3"], capture_output=True, text=True,
                         env={**os.environ, "VILMS_TALK_SECONDS": "1"}, timeout=60)
    assert run.returncode == 3
    lines = run.stdout.splitlines()
    assert lines[0] == "start" and "end" in lines
    assert any("still running" in line for line in lines[1:lines.index("end")])
    assert "FAILED (exit 3)" in lines[-1]
