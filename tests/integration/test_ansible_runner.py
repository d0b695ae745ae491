"""site.yml driven through ansible-runner, as CI systems and AWX run it, against a real systemd +
Docker test host (the Molecule ``cpu`` host: created and prepared by Molecule, converged here)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HOST = "vilms-cpu"
pytestmark = pytest.mark.testbed


def _testbed_missing() -> str | None:
    if shutil.which("docker") is None:
        return "no docker CLI"
    probe = subprocess.run(["docker", "image", "inspect", "vilms/testhost:bookworm"], capture_output=True)
    if probe.returncode != 0:
        return "the test-host image is not built (make testbed)"
    return None


def _molecule(*args: str) -> None:
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}"}
    subprocess.run(["molecule", *args, "-s", "cpu"], cwd=REPO, env=env, check=True)


@pytest.fixture(scope="module")
def test_host() -> Iterator[str]:
    missing = _testbed_missing()
    if missing:
        if os.environ.get("VILMS_REQUIRE_TESTBED") == "1":
            pytest.fail(f"the test bed is required here but {missing}")
        pytest.skip(missing)
    _molecule("destroy")
    _molecule("create")
    _molecule("prepare")
    try:
        yield HOST
    finally:
        _molecule("destroy")


def _private_data_dir(tmp: Path) -> Path:
    """An ansible-runner project: the repository's inventory variables, plus the test host's
    connection and test-only values (as molecule/cpu/hosts.yml has them)."""
    inventory = tmp / "inventory"
    inventory.mkdir(parents=True)
    scenario = yaml.safe_load((REPO / "molecule" / "cpu" / "hosts.yml").read_text())
    host_vars = scenario["all"]["children"]["edge"]["children"]["cpu"]["hosts"][HOST]
    host_vars = {**host_vars, "ansible_connection": "community.docker.docker",
                 "gateway_wheelhouse": str(tmp / "wheelhouse")}
    hosts = {"all": {"children": {"edge": {"children": {"cpu": {"hosts": {HOST: host_vars}}}}}}}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (inventory / "group_vars").symlink_to(REPO / "inventory" / "group_vars")
    (inventory / "host_vars").symlink_to(REPO / "inventory" / "host_vars")
    return tmp


def _run(private_dir: Path):  # type: ignore[no-untyped-def]
    import ansible_runner

    return ansible_runner.run(
        private_data_dir=str(private_dir),
        project_dir=str(REPO),
        playbook=str(REPO / "site.yml"),
        inventory=str(private_dir / "inventory"),
        envvars={
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
            "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
        },
        quiet=True,
    )


def test_site_converges_then_reports_no_change(test_host: str, tmp_path: Path) -> None:
    private_dir = _private_data_dir(tmp_path)
    first = _run(private_dir)
    assert first.status == "successful", first.stdout.read()[-4000:]
    assert first.rc == 0
    stats = first.stats
    assert stats["failures"].get(test_host, 0) == 0 and stats["dark"].get(test_host, 0) == 0
    assert stats["ok"][test_host] > 20
    assert stats["changed"].get(test_host, 0) > 0  # a fresh box: the gateway, Ollama, models...

    # The events show what a user cares about: the gateway came up ready and lists its models.
    passed = {e["event_data"].get("task") for e in first.events if e["event"] == "runner_on_ok"}
    assert {"Wait until the gateway is ready", "List the models through the gateway"} <= passed

    second = _run(private_dir)
    assert second.status == "successful", second.stdout.read()[-4000:]
    assert second.stats["changed"].get(test_host, 0) == 0
    assert second.stats["failures"].get(test_host, 0) == 0
