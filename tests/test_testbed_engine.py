"""testbed/engine.sh's choice when a Docker engine already runs: it is used as it is. The engine here
is a stand-in for the Docker API on a unix socket (the real `docker` CLI talks to it), so the
test needs no Docker daemon and changes nothing on this machine."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.playbooks import REPO

MACHINE_CONFIG = Path("/etc/docker/daemon.json")

pytestmark = pytest.mark.skipif(not (shutil.which("docker") and shutil.which("jq")),
                                reason="needs the docker CLI and jq")


class FakeEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Answers the two calls `docker info` makes (/_ping, /v<api>/info) and records every request."""

    daemon_threads = True

    def __init__(self, path: Path, runtimes: dict[str, Any]) -> None:
        self.runtimes = runtimes
        self.seen: list[str] = []
        super().__init__(str(path), FakeEngineHandler)

    def get_request(self) -> tuple[Any, Any]:
        request, _ = super().get_request()
        return request, ("local", 0)


class FakeEngineHandler(http.server.BaseHTTPRequestHandler):
    server: FakeEngine

    def _answer(self, with_body: bool) -> None:
        self.server.seen.append(f"{self.command} {self.path}")
        info = {"Runtimes": self.server.runtimes, "DefaultRuntime": "runc", "ServerVersion": "20.10.24"}
        body = b"OK" if self.path.endswith("/_ping") else json.dumps(info).encode()
        self.send_response(200)
        self.send_header("Api-Version", "1.41")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(True)

    def do_HEAD(self) -> None:
        self._answer(False)

    def do_POST(self) -> None:
        self._answer(True)

    def log_message(self, *args: object) -> None:
        pass


def fake_engine(tmp_path: Path, runtimes: dict[str, Any]) -> Iterator[FakeEngine]:
    server = FakeEngine(tmp_path / "docker.sock", runtimes)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def engine_with_capfilter(tmp_path: Path) -> Iterator[FakeEngine]:
    yield from fake_engine(tmp_path, {"runc": {"path": "runc"}, "capfilter": {"path": "/usr/local/bin/runc-capfilter"}})


@pytest.fixture
def plain_engine(tmp_path: Path) -> Iterator[FakeEngine]:
    yield from fake_engine(tmp_path, {"runc": {"path": "runc"}, "io.containerd.runc.v2": {"path": "runc"}})


def engine_sh(tmp_path: Path, command: str, server: FakeEngine) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DOCKER_HOST": f"unix://{server.server_address}",
           "VILMS_TESTBED_RUN": str(tmp_path / "run"), "VILMS_TESTBED_DATA": str(tmp_path / "data")}
    return subprocess.run(["bash", str(REPO / "testbed" / "engine.sh"), command], capture_output=True, text=True,
                          timeout=60, env=env)


def machine_config() -> bytes | None:
    return MACHINE_CONFIG.read_bytes() if MACHINE_CONFIG.exists() else None


def kernel_lacks_capabilities() -> bool:
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    bounding = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("CapBnd:"))
    return int(bounding.split()[1], 16) != (1 << (last + 1)) - 1


def test_a_running_engine_with_the_wrapper_is_used_as_it_is(tmp_path: Path, engine_with_capfilter: FakeEngine) -> None:
    before = machine_config()
    run = engine_sh(tmp_path, "up", engine_with_capfilter)
    assert run.returncode == 0, run.stdout + run.stderr
    env = (tmp_path / "run" / "env").read_text()
    assert f"DOCKER_HOST=unix://{engine_with_capfilter.server_address}" in env
    assert "VILMS_TESTBED_RUNTIME=capfilter" in env and "VILMS_TESTBED_ENGINE=machine" in env
    # It only asked the engine; it started no engine of its own and wrote no config anywhere.
    assert all(call.startswith(("GET ", "HEAD ")) for call in engine_with_capfilter.seen), engine_with_capfilter.seen
    assert not (tmp_path / "run" / "daemon.json").exists() and not (tmp_path / "data").exists()
    assert machine_config() == before

    down = engine_sh(tmp_path, "down", engine_with_capfilter)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not (tmp_path / "run").exists()
    assert machine_config() == before


def test_an_engine_elsewhere_without_the_wrapper_is_not_reconfigured(tmp_path: Path, plain_engine: FakeEngine) -> None:
    before = machine_config()
    run = engine_sh(tmp_path, "up", plain_engine)
    if kernel_lacks_capabilities():
        # Privileged test hosts need the wrapper here; an engine not on the default socket is not ours
        # to edit: the way forward is named instead.
        assert run.returncode == 1
        assert "needs the capfilter runtime; register" in run.stderr and "as 'capfilter' in its config" in run.stderr
    else:
        assert run.returncode == 0, run.stdout + run.stderr
        assert "VILMS_TESTBED_RUNTIME=runc" in (tmp_path / "run" / "env").read_text()
    assert machine_config() == before
    assert all(call.startswith(("GET ", "HEAD ")) for call in plain_engine.seen), plain_engine.seen
