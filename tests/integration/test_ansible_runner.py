"""site.yml driven through ansible-runner, as CI systems and AWX run it, against a real systemd +
Docker test host (the Molecule ``cpu`` host: created and prepared by Molecule, converged here).

The demo box (``make demo``: molecule/demo, host ``vilms-demo``) must survive all of it: when it is
up, the tests run beside it; when it is not, a stand-in under the demo's name, network and port
takes its place for the run, so the check costs seconds instead of a second provisioning."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HOST = "vilms-cpu"
# Secrets given to the run as a vault would give them; none may appear in any output.
API_KEY = "sk-runner-secret-4b1d8e0c9a7f"
HF_TOKEN = "hf_runnerSecretToken7d3e9b1c"
SECRETS = (API_KEY, HF_TOKEN)

TEST_SCENARIOS = ("cpu", "jetson", "dgpu")
pytestmark = pytest.mark.testbed
STARTED = time.monotonic()


def _say(message: str) -> None:
    """Progress on the terminal (make integration runs pytest with -s): this module takes minutes."""
    print(f"[integration {time.monotonic() - STARTED:4.0f}s] {message}", flush=True)


def _testbed_missing() -> str | None:
    if shutil.which("docker") is None:
        return "no docker CLI"
    probe = subprocess.run(["docker", "image", "inspect", "vilms/testhost:bookworm"], capture_output=True)
    if probe.returncode != 0:
        return "the test-host image is not built (make testbed)"
    return None


def _molecule(*args: str, scenario: str = "cpu") -> None:
    _say(f"molecule {' '.join(args)} -s {scenario}")
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}"}
    subprocess.run(["molecule", *args, "-s", scenario], cwd=REPO, env=env, check=True)


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True)


@dataclass(frozen=True)
class DemoBox:
    name: str
    network: str
    url: str  # what must keep answering: the gateway's /health, or the stand-in's page
    container_id: str
    standin: bool


def _demo_platform() -> tuple[str, str, int]:
    """The demo box's name, network and loopback port, as molecule/demo/molecule.yml has them."""
    platform = yaml.safe_load((REPO / "molecule" / "demo" / "molecule.yml").read_text())["platforms"][0]
    published = platform["published_ports"][0]  # "127.0.0.1:${VILMS_DEMO_PORT:-8989}:8989"
    port = int(os.environ.get("VILMS_DEMO_PORT", "8989")) if "VILMS_DEMO_PORT" in published else int(
        published.split(":")[1])
    return platform["name"], platform["networks"][0]["name"], port


def _answers(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as reply:
        return bool(reply.status == 200)
    return False


def _running_id(name: str) -> str | None:
    probe = _docker("container", "inspect", "-f", "{{.Id}} {{.State.Running}}", name)
    if probe.returncode != 0:
        return None
    container_id, running = probe.stdout.split()
    return container_id if running == "true" else None


def _require_testbed() -> None:
    missing = _testbed_missing()
    if missing:
        if os.environ.get("VILMS_REQUIRE_TESTBED") == "1":
            pytest.fail(f"the test bed is required here but {missing}")
        pytest.skip(missing)


@pytest.fixture(scope="module")
def demo_box() -> Iterator[DemoBox]:
    """The demo box that is up, or a stand-in under its name, network and port for this module."""
    _require_testbed()
    name, network, port = _demo_platform()
    running = _running_id(name)
    if running:
        box = DemoBox(name, network, f"http://127.0.0.1:{port}/health", running, standin=False)
        assert _answers(box.url), f"the demo box {name} is up but {box.url} does not answer before the tests"
        _say(f"the demo box {name} is up: the tests run beside it")
        yield box
        return
    _docker("network", "create", "--label", "vilms.testbed=demo-standin", network)
    started = _docker("run", "-d", "--rm", "--name", name, "--network", network, "--label",
                      "vilms.testbed=demo-standin", "-p", f"127.0.0.1:{port}:{port}", "local/pybase:bookworm",
                      "python3", "-m", "http.server", str(port), "--directory", "/etc")
    if started.returncode != 0:
        _docker("network", "rm", network)
        pytest.skip(f"no demo box up, and a stand-in for it could not start: {started.stderr.strip()}")
    box = DemoBox(name, network, f"http://127.0.0.1:{port}/", started.stdout.strip(), standin=True)
    deadline = time.monotonic() + 30
    while not _answers(box.url) and time.monotonic() < deadline:
        time.sleep(0.2)
    _say(f"no demo box up: a stand-in holds its name {name}, network {network} and port {port}")
    try:
        yield box
    finally:
        _docker("rm", "-f", name)
        _docker("network", "rm", network)


@pytest.fixture(scope="module")
def test_host(demo_box: DemoBox) -> Iterator[str]:
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


def _progress(event: dict[str, Any]) -> bool:
    """One line per task as ansible-runner reports it, so the minutes of a converge are not silent."""
    if event.get("event") == "playbook_on_task_start":
        _say(f"  task: {event['event_data'].get('task', '?')}")
    return True


def _run(private_dir: Path):  # type: ignore[no-untyped-def]
    import ansible_runner

    _say("ansible-runner: site.yml")

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
        event_handler=_progress,
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


def test_demo_box_survives_the_test_hosts(demo_box: DemoBox, test_host: str) -> None:
    """What `make test` does to other hosts (each scenario's destroy; the cpu host has been created,
    prepared and converged above) leaves the demo box running, the same container, answering."""
    for scenario in TEST_SCENARIOS:
        _molecule("destroy", scenario=scenario)
    assert _running_id(demo_box.name) == demo_box.container_id, f"{demo_box.name} was removed or replaced"
    assert _answers(demo_box.url), f"the demo box no longer answers on {demo_box.url}"
    network = _docker("network", "inspect", "-f", "{{.Name}}", demo_box.network)
    assert network.returncode == 0, f"the demo network {demo_box.network} is gone"
