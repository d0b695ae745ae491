"""A real ``vilms-gateway serve`` process on loopback, for the drills (test_fault_drills.py,
test_bad_input_drills.py), and the check that an answer is an OpenAI-shaped error."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[bytes]
    stderr_path: Path
    ready_seconds: float
    stdout_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(doc: dict[str, Any], tmp: Path, port: int, threads: int | None, tag: str = "",
            threads_in_config: bool = True, env: dict[str, str] | None = None,
            wait_for: str = "/health/ready") -> Served:
    """Start ``vilms-gateway serve`` and return once ``wait_for`` answers 200 (``/health`` for a
    gateway that is up but whose backends are not). ``threads=None``: the gateway sizes them."""
    config = tmp / "config.yaml"
    # The config's thread count sizes the request slots; --threads alone sizes only waitress's pool
    # (see test_threads_flag_alone_keeps_health_answerable).
    if threads_in_config and threads is not None:
        doc = {**doc, "gateway": {**doc.get("gateway", {}), "threads": threads}}
    config.write_text(yaml.safe_dump(doc))
    stderr_path = tmp / f"gateway{tag}.stderr"
    stdout_path = tmp / f"gateway{tag}.stdout"
    started = time.monotonic()
    # The child holds its own copies of the log files; the parent's close once it has started.
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--host", "127.0.0.1",
             "--port", str(port), *(["--threads", str(threads)] if threads is not None else [])],
            stdout=stdout, stderr=stderr, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    url = f"http://127.0.0.1:{port}"
    deadline = started + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, stderr_path.read_text()[-2000:]
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + wait_for, timeout=0.5).status_code == 200:
                return Served(url, proc, stderr_path, time.monotonic() - started, stdout_path)
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f"no 200 on {wait_for} within 15 s")


def wait_until(predicate: Callable[[], bool], limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def stop(served: Served) -> int:
    if served.proc.poll() is None:
        served.proc.send_signal(signal.SIGTERM)
        try:
            return served.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            served.proc.kill()
    return served.proc.wait()


@contextlib.contextmanager
def serve(doc: dict[str, Any], tmp: Path, threads: int | None = 8) -> Iterator[Served]:
    served = launch(doc, tmp, free_port(), threads)
    try:
        yield served
    finally:
        stop(served)


def openai_error(resp: httpx.Response) -> dict[str, Any]:
    """The error object, after checking the response is in OpenAI's shape and carries no traceback."""
    assert "Traceback" not in resp.text and 'File "' not in resp.text, resp.text[:500]
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.text[:200]
    error = resp.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and {"param", "code"} <= set(error)
    return dict(error)


