"""site.yml driven through ansible-runner, as CI systems and AWX run it, against a real systemd +
Docker test host (the Molecule ``cpu`` host: created and prepared by Molecule, converged here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HOST = "vilms-cpu"
# Secrets given to the run as a vault would give them; none may appear in any output.
API_KEY = "sk-runner-secret-4b1d8e0c9a7f"
HF_TOKEN = "hf_runnerSecretToken7d3e9b1c"
SECRETS = (API_KEY, HF_TOKEN)
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
    # The keys come from the vault variable, as in a real inventory, not from the scenario's test key.
    host_vars.pop("gateway_api_keys", None)
    hosts = {"all": {"children": {"edge": {"children": {"cpu": {"hosts": {HOST: host_vars}}}}}}}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (inventory / "group_vars").symlink_to(REPO / "inventory" / "group_vars")
    (inventory / "host_vars").symlink_to(REPO / "inventory" / "host_vars")
    (tmp / "env").mkdir()
    (tmp / "env" / "extravars").write_text(yaml.safe_dump(
        {"vault_gateway_api_keys": [API_KEY], "vault_vllm_hf_token": HF_TOKEN}))
    return tmp


def _on_host(host: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "exec", host, *argv], capture_output=True, text=True, timeout=60)


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
            "HF_TOKEN": HF_TOKEN,
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

    # No secret leaves the box: not in any event, not in the gateway's journal or access log (its
    # stdout goes to the journal), after a request made with the key.
    leaked = [f"{e['event']} {e['event_data'].get('task')}" for e in first.events
              if any(secret in json.dumps(e) for secret in SECRETS)]
    assert leaked == [], leaked
    asked = _on_host(test_host, "curl", "-sf", "-H", f"Authorization: Bearer {API_KEY}",
                     "http://127.0.0.1:8989/v1/models")
    assert asked.returncode == 0, asked.stderr
    journal = _on_host(test_host, "journalctl", "-u", "vilms-gateway", "--no-pager", "-o", "cat")
    assert '"path":"/v1/models"' in journal.stdout.replace(" ", ""), journal.stdout[-2000:]
    assert not [secret for secret in SECRETS if secret in journal.stdout]
    stored = _on_host(test_host, "grep", "-rlF", "-e", API_KEY, "-e", HF_TOKEN, "/var/log", "/var/lib/vilms")
    assert stored.stdout == "", f"a secret is stored in {stored.stdout}"

    second = _run(private_dir)
    assert second.status == "successful", second.stdout.read()[-4000:]
    assert second.stats["changed"].get(test_host, 0) == 0
    assert second.stats["failures"].get(test_host, 0) == 0
