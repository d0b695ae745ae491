"""The stand-ins' fault modes behave as documented, and they run as plain scripts and CLIs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.standin_helpers import STANDINS, USER, client_for
from tests.standins.fixtures import StandinServer
from tests.standins.ollama import parse_ollama_host


@pytest.mark.parametrize("kind", ["ollama", "vllm"])
def test_fault_down_drops_the_connection(kind: str, ollama: StandinServer, vllm: StandinServer) -> None:
    server = ollama if kind == "ollama" else vllm
    server.set_fault("down", count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(server.url + "/v1/models")
    assert httpx.get(server.url + "/v1/models").status_code == 200
    assert [r["fault"] for r in server.request_log] == ["down", "ok"]


def test_fault_hang_holds_until_reset_and_does_not_block_teardown() -> None:
    server = StandinServer.vllm(model="m")
    server.set_fault("hang")
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(server.url + "/v1/models", timeout=0.3)
    outcome: list[object] = []
    held = threading.Thread(target=lambda: outcome.append(_try_get(server.url + "/v1/models", 10)))
    held.start()
    time.sleep(0.2)
    started = time.monotonic()
    server.close()  # a hung request is in flight: closing must still be quick
    held.join(timeout=5)
    assert time.monotonic() - started < 2 and not held.is_alive()
    assert isinstance(outcome[0], httpx.TransportError)


def _try_get(url: str, timeout: float) -> object:
    try:
        return httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return exc


def test_fault_hang_released_by_reset(ollama: StandinServer) -> None:
    ollama.set_fault("hang")
    result: list[object] = []
    waiter = threading.Thread(target=lambda: result.append(_try_get(ollama.url + "/api/tags", 10)))
    waiter.start()
    deadline = time.monotonic() + 10  # the request is logged before its fault holds it
    while not any(path == "/api/tags" for path, _ in ollama.requests) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert waiter.is_alive()
    ollama.reset()
    waiter.join(timeout=2)
    assert not waiter.is_alive() and isinstance(result[0], httpx.TransportError)
    assert httpx.get(ollama.url + "/api/tags").status_code == 200


def test_fault_slow_delays_then_answers(vllm: StandinServer) -> None:
    vllm.set_fault("slow", seconds=0.4, count=1)
    started = time.monotonic()
    assert httpx.get(vllm.url + "/health").status_code == 200
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    httpx.get(vllm.url + "/health")
    assert time.monotonic() - started < 0.3


def test_fault_error500_in_each_error_shape(ollama: StandinServer, vllm: StandinServer) -> None:
    for server in (ollama, vllm):
        server.set_fault("error500", message="boom")
    v1 = httpx.post(ollama.url + "/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER})
    assert v1.status_code == 500 and v1.json()["error"]["type"] == "api_error"
    assert v1.json()["error"]["message"] == "boom"
    native = httpx.post(ollama.url + "/api/chat", json={"model": "qwen3:4b", "messages": USER})
    assert (native.status_code, native.json()) == (500, {"error": "boom"})
    other = httpx.post(vllm.url + "/v1/chat/completions", json={"model": "qwen3", "messages": USER})
    assert other.status_code == 500 and other.json()["type"] == "InternalServerError"
    with pytest.raises(openai.InternalServerError):
        client_for(vllm).chat.completions.create(model="qwen3", messages=USER)


def test_fault_error429_sends_retry_after_via_control_api(ollama: StandinServer) -> None:
    ctl = httpx.post(ollama.url + "/_standin/fault", json={"mode": "error429", "retry_after": 3, "count": 1})
    assert ctl.json()["mode"] == "error429"
    limited = httpx.post(ollama.url + "/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert httpx.post(ollama.url + "/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER}).is_success
    assert httpx.get(ollama.url + "/_standin/fault").json()["mode"] == "ok"


@pytest.mark.parametrize("kind", ["ollama", "vllm"])
def test_fault_cut_drops_stream_before_done(kind: str, ollama: StandinServer, vllm: StandinServer) -> None:
    server, model = (ollama, "qwen3:4b") if kind == "ollama" else (vllm, "qwen3")
    server.set_fault("cut", after=2)
    received: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST",
            server.url + "/v1/chat/completions",
            json={"model": model, "messages": USER, "stream": True},
        ) as resp,
    ):
        for line in resp.iter_lines():
            if line.startswith("data: "):
                received.append(line)
    assert len(received) == 2 and "data: [DONE]" not in received
    with pytest.raises(openai.APIError):
        list(client_for(server).chat.completions.create(model=model, messages=USER, stream=True))
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(server.url + "/v1/chat/completions", json={"model": model, "messages": USER})


def test_fault_limited_to_paths_and_count(ollama: StandinServer) -> None:
    ollama.set_fault("error500", count=1, paths=["/v1/chat/completions"])
    assert httpx.get(ollama.url + "/api/tags").status_code == 200
    chat = {"model": "qwen3:4b", "messages": USER}
    assert httpx.post(ollama.url + "/v1/chat/completions", json=chat).status_code == 500
    assert httpx.post(ollama.url + "/v1/chat/completions", json=chat).status_code == 200


def test_control_api_requests_reset_and_validation(ollama: StandinServer) -> None:
    httpx.post(ollama.url + "/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER, "seed": 7})
    log = httpx.get(ollama.url + "/_standin/requests").json()
    assert [(r["method"], r["path"], r["body"]["seed"]) for r in log] == [("POST", "/v1/chat/completions", 7)]
    bad = httpx.post(ollama.url + "/_standin/fault", json={"mode": "explode"})
    assert bad.status_code == 400 and "explode" in bad.json()["error"]
    httpx.post(ollama.url + "/_standin/fault", json={"mode": "error500"})
    assert httpx.post(ollama.url + "/_standin/reset").is_success
    assert httpx.get(ollama.url + "/_standin/requests").json() == []
    assert httpx.get(ollama.url + "/api/tags").status_code == 200
    assert httpx.post(ollama.url + "/_standin/config", json={"chunks": 2}).json()["chunks"] == 2
    stream = client_for(ollama).chat.completions.create(model="qwen3:4b", messages=USER, stream=True)
    assert sum(1 for c in stream if c.choices and c.choices[0].delta.content) == 2


def test_stop_refuses_connections_and_start_reuses_the_port(ollama: StandinServer) -> None:
    port = ollama.port
    pooled = httpx.Client(base_url=ollama.url)  # keeps its connection alive across calls
    assert pooled.get("/api/tags").status_code == 200
    ollama.stop()
    with pytest.raises(httpx.TransportError):
        pooled.get("/api/tags")
    with pytest.raises(httpx.ConnectError):
        httpx.get(ollama.url + "/api/tags")
    ollama.start()
    assert ollama.port == port
    assert pooled.get("/api/tags").status_code == 200
    pooled.close()


# ---------------------------------------------------------------------------------- CLI


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"{url} never came up")


@pytest.fixture
def opt_standin(tmp_path: Path) -> Path:
    """The stand-in files copied flat, as the Dockerfiles lay them out in /opt/standin."""
    target = tmp_path / "standin"
    target.mkdir()
    for source in STANDINS.glob("*.py"):
        shutil.copy(source, target / source.name)
    return target


def test_ollama_runs_as_a_plain_script_with_ollama_env(opt_standin: Path, tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "OLLAMA_HOST": f"127.0.0.1:{port}",
        "OLLAMA_MODELS": str(tmp_path / "models"),
        "JETSON_JETPACK": "6",
        "OLLAMA_KEEP_ALIVE": "24h",
    }
    script = str(opt_standin / "ollama.py")
    proc = subprocess.Popen([sys.executable, script, "serve", "--quiet"], env=env, stderr=subprocess.PIPE)
    try:
        _wait_up(f"http://127.0.0.1:{port}/", proc)
        version = httpx.get(f"http://127.0.0.1:{port}/api/version")
        assert json.loads(version.headers["x-standin-env"])["JETSON_JETPACK"] == "6"
        assert version.json()["standin"]["env"]["OLLAMA_KEEP_ALIVE"] == "24h"
        pull = subprocess.run([sys.executable, script, "pull", "qwen3:4b"], env=env, capture_output=True, text=True)
        assert pull.returncode == 0 and pull.stdout.splitlines()[-1] == "success"
        missing = subprocess.run(
            [sys.executable, script, "pull", "doesnotexist"], env=env, capture_output=True, text=True
        )
        assert missing.returncode == 1 and "file does not exist" in missing.stderr
        listing = subprocess.run([sys.executable, script, "list"], env=env, capture_output=True, text=True)
        assert listing.stdout.splitlines()[1].startswith("qwen3:4b")
        assert (tmp_path / "models/manifests/registry.ollama.ai/library/qwen3/4b").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0


def test_vllm_module_cli_ignores_engine_flags() -> None:
    port = _free_port()
    cmd = [sys.executable, "-m", "tests.standins.vllm", "serve", "org/Model-7B", "--port", str(port)]
    cmd += [
        "--host",
        "127.0.0.1",
        "--gpu-memory-utilization",
        "0.8",
        "--enforce-eager",
        "--max-model-len",
        "2048",
    ]
    cmd += ["--served-model-name", "model-a", "model-b", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=STANDINS.parent.parent, stderr=subprocess.PIPE)
    try:
        _wait_up(f"http://127.0.0.1:{port}/health", proc)
        data = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"]
        assert [(m["id"], m["root"], m["max_model_len"]) for m in data] == [
            ("model-a", "org/Model-7B", 2048),
            ("model-b", "org/Model-7B", 2048),
        ]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ("127.0.0.1", 11434)),
        ("0.0.0.0", ("0.0.0.0", 11434)),
        ("0.0.0.0:11500", ("0.0.0.0", 11500)),
        (":11434", ("0.0.0.0", 11434)),
        ("http://10.0.0.5:8080/", ("10.0.0.5", 8080)),
        ("[::1]:11434", ("::1", 11434)),
    ],
)
def test_ollama_host_is_read_like_ollama(value: str | None, expected: tuple[str, int]) -> None:
    assert parse_ollama_host(value) == expected
