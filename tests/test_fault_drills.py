"""Fault drills against a real ``vilms-gateway serve`` process on loopback, under load.

What an operator of an edge box would notice: a backend host dying mid-load, a backend that accepts
connections and never answers, garbage from clients, and ``systemctl restart`` while clients are busy.
test_fallback.py and test_live_server.py cover each fault alone and in-process; these drills run them
against the served gateway with traffic flowing. Every loop is bounded in count and time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.bad_inputs import PROTOCOL_GARBAGE, bad_inputs
from tests.gateway_harness import gateway_config
from tests.image_server import ImageServer
from tests.standins.fixtures import StandinServer

USER = [{"role": "user", "content": "hello"}]
CHAT = {"model": "qwen3:4b", "messages": USER}
STARTUP_TARGET_S = 1.0  # the "ready <= 1 s after start"; bench/ measures it, drills allow 1.5x for busy CI


# -- a served gateway ------------------------------------------------------------------------------
@dataclass
class Served:
    url: str
    proc: subprocess.Popen[bytes]
    stderr_path: Path
    ready_seconds: float

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _launch(doc: dict[str, Any], tmp: Path, port: int, threads: int, tag: str = "",
            threads_in_config: bool = True) -> Served:
    config = tmp / "config.yaml"
    # The config's thread count sizes the request slots; --threads alone sizes only waitress's pool
    # (see test_threads_flag_alone_keeps_health_answerable).
    if threads_in_config:
        doc = {**doc, "gateway": {**doc.get("gateway", {}), "threads": threads}}
    config.write_text(yaml.safe_dump(doc))
    stderr_path = tmp / f"gateway{tag}.stderr"
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--host", "127.0.0.1",
         "--port", str(port), "--threads", str(threads)],
        stdout=subprocess.DEVNULL, stderr=stderr_path.open("wb"), env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = started + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, stderr_path.read_text()[-2000:]
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health/ready", timeout=0.5).status_code == 200:
                return Served(url, proc, stderr_path, time.monotonic() - started)
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("gateway not ready within 15 s")


def _stop(served: Served) -> int:
    if served.proc.poll() is None:
        served.proc.send_signal(signal.SIGTERM)
        try:
            return served.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            served.proc.kill()
    return served.proc.wait()


@contextlib.contextmanager
def serve(doc: dict[str, Any], tmp: Path, threads: int = 8) -> Iterator[Served]:
    served = _launch(doc, tmp, _free_port(), threads)
    try:
        yield served
    finally:
        _stop(served)


def openai_error(resp: httpx.Response) -> dict[str, Any]:
    """The error object, after checking the response is in OpenAI's shape and carries no traceback."""
    assert "Traceback" not in resp.text and 'File "' not in resp.text, resp.text[:500]
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.text[:200]
    error = resp.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and {"param", "code"} <= set(error)
    return dict(error)


# -- load ------------------------------------------------------------------------------------------
@dataclass
class Load:
    """Client threads looping until stopped; each outcome is (started, finished, status or error)."""

    url: str
    keepalive: bool = True
    outcomes: list[tuple[float, float, Any]] = field(default_factory=list)
    streams: list[tuple[float, float, list[str]]] = field(default_factory=list)  # started, elapsed, events
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, plain: int, streaming: int = 0, body: dict[str, Any] = CHAT, stagger: float = 0.0) -> Load:
        for _ in range(plain):
            self._threads.append(threading.Thread(target=self._plain, args=(body,), daemon=True))
        for _ in range(streaming):
            self._threads.append(threading.Thread(target=self._streaming, args=(body,), daemon=True))
        for t in self._threads:
            t.start()
            time.sleep(stagger)  # spread the clients' phases so some are always mid-request
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)
        assert not any(t.is_alive() for t in self._threads), "a client thread hung"

    def _loop(self, once: Callable[[httpx.Client], None]) -> None:
        limits = httpx.Limits(max_keepalive_connections=None if self.keepalive else 0)
        with httpx.Client(timeout=8, trust_env=False, limits=limits) as client:
            for _ in range(2000):  # bounded; stop() ends it long before
                if self._stop.is_set():
                    return
                once(client)

    def _plain(self, body: dict[str, Any]) -> None:
        def once(client: httpx.Client) -> None:
            started = time.monotonic()
            try:
                outcome: Any = client.post(self.url + "/v1/chat/completions", json=body).status_code
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
                time.sleep(0.02)  # a refused connect returns at once; do not spin
            self.outcomes.append((started, time.monotonic(), outcome))

        self._loop(once)

    def _streaming(self, body: dict[str, Any]) -> None:
        def once(client: httpx.Client) -> None:
            started = time.monotonic()
            with client.stream("POST", self.url + "/v1/chat/completions", json={**body, "stream": True}) as resp:
                assert resp.status_code == 200, resp.read()
                events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
            self.streams.append((started, time.monotonic() - started, events))

        self._loop(once)


def _ready_backends(url: str) -> dict[str, Any]:
    return dict(httpx.get(url + "/health/ready", timeout=2).json()["backends"])


def _wait_for(predicate: Callable[[], bool], limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# -- drills ----------------------------------------------------------------------------------------
def test_killing_the_primary_host_under_load_loses_no_request(tmp_path: Path) -> None:
    with (StandinServer.ollama(models=["qwen3:4b"], name="ollama-a", chunks=8, chunk_delay=0.02) as a,
          StandinServer.ollama(models=["qwen3:4b"], name="ollama-b", chunks=8, chunk_delay=0.02) as b):
        doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[a.url, b.url],
                             gateway={"probe-interval": 0.25, "cooldown-failures": 2, "cooldown-seconds": 60})
        with serve(doc, tmp_path) as gw:
            load = Load(gw.url).start(plain=4, streaming=2)
            try:
                time.sleep(0.8)
                a.stop()
                killed_at = time.monotonic()
                # The dead host is cooled down (skipped) rather than tried on every request.
                assert _wait_for(lambda: _ready_backends(gw.url)[a.url]["cooled_down_for_seconds"] > 0, 3)
                time.sleep(0.8)
                served_by_b_while_a_dead = len(b.bodies("/v1/chat/completions"))
                a.start()
                # Back: the readiness probe re-admits it long before the 60 s cooldown would end.
                assert _wait_for(lambda: _ready_backends(gw.url)[a.url]["cooled_down_for_seconds"] == 0
                                 and _ready_backends(gw.url)[a.url]["up"] is True, 3)
                before = len(a.bodies("/v1/chat/completions"))
                assert _wait_for(lambda: len(a.bodies("/v1/chat/completions")) > before + 5, 3)
            finally:
                load.stop()
    plain = [o for _, _, o in load.outcomes]
    assert len(plain) > 50 and set(plain) == {200}, {o: plain.count(o) for o in set(plain)}
    assert any(start > killed_at for start, _, _ in load.outcomes)
    assert served_by_b_while_a_dead > 10
    assert len(load.streams) > 10
    interrupted = 0
    for started, elapsed, events in load.streams:
        assert elapsed < 5, "a stream hung"
        assert events[-1] == "[DONE]"
        payloads = [json.loads(e) for e in events[:-1]]
        errors = [p for p in payloads if "error" in p]
        if errors:  # cut mid-stream: whole events, then one error event, then [DONE]
            interrupted += 1
            assert started < killed_at, "a stream begun after the kill was cut: failover missed it"
            assert errors == [payloads[-1]] and errors[0]["error"]["code"] == "upstream_stream_interrupted"
        else:
            assert payloads[-1]["choices"][0]["finish_reason"] == "stop"
    assert interrupted < len(load.streams) / 2


def test_backend_that_never_answers_gives_504s_while_health_stays_responsive(tmp_path: Path) -> None:
    with StandinServer.ollama(models=["qwen3:4b"], name="wedged") as backend:
        deadline = 1.5
        doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[backend.url],
                             gateway={"request-deadline": deadline, "read-timeout": 60, "probe-interval": 60})
        with serve(doc, tmp_path, threads=4) as gw:  # 3 request slots + 1 thread kept for /health
            backend.set_fault("hang", paths=["/v1/chat/completions"])
            results: list[tuple[float, httpx.Response]] = []

            def call(stream: bool) -> None:
                started = time.monotonic()
                resp = httpx.post(gw.url + "/v1/chat/completions", json={**CHAT, "stream": stream}, timeout=10)
                results.append((time.monotonic() - started, resp))

            callers = [threading.Thread(target=call, args=(i == 0,)) for i in range(3)]
            for c in callers:
                c.start()
            time.sleep(0.3)
            extra = [threading.Thread(target=call, args=(False,)) for _ in range(2)]  # beyond the slots
            for c in extra:
                c.start()
            health_times = []
            for _ in range(12):  # about 1.2 s of polling while every slot is held
                started = time.monotonic()
                assert httpx.get(gw.url + "/health", timeout=2).status_code == 200
                health_times.append(time.monotonic() - started)
                time.sleep(0.1)
            for c in callers + extra:
                c.join(timeout=10)
            backend.clear_fault()
            after = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, timeout=5)
    assert max(health_times) < 0.5, health_times
    statuses = sorted(r.status_code for _, r in results)
    assert statuses == [429, 429, 504, 504, 504], statuses
    for elapsed, resp in results:
        error = openai_error(resp)
        if resp.status_code == 504:
            assert deadline - 0.2 < elapsed < deadline + 1.0, elapsed
            assert error["type"] == "api_error"
        else:
            assert elapsed < 1.0 and resp.headers["Retry-After"]
    assert after.status_code == 200


def test_threads_flag_alone_keeps_health_answerable(tmp_path: Path) -> None:
    """`vilms-gateway serve --threads 3` with no `threads:` in the file, as a user runs it by hand."""
    with StandinServer.ollama(models=["qwen3:4b"], name="wedged") as backend:
        doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[backend.url],
                             gateway={"request-deadline": 1.5, "read-timeout": 60, "probe-interval": 60})
        served = _launch(doc, tmp_path, _free_port(), threads=3, threads_in_config=False)
        try:
            backend.set_fault("hang", paths=["/v1/chat/completions"])
            callers = [threading.Thread(target=httpx.post, args=(served.url + "/v1/chat/completions",),
                                        kwargs={"json": CHAT, "timeout": 10}) for _ in range(3)]
            for c in callers:
                c.start()
            time.sleep(0.3)
            started = time.monotonic()
            assert httpx.get(served.url + "/health", timeout=5).status_code == 200
            waited = time.monotonic() - started
            for c in callers:
                c.join(timeout=10)
        finally:
            backend.clear_fault()
            _stop(served)
    assert waited < 0.5, f"/health waited {waited:.2f} s for a worker thread"


# Refused by waitress before the app runs; the gateway renders those answers in OpenAI's shape too.
WAITRESS_ANSWERS = {"huge body", "a million-token string"}


def test_bad_input_corpus_gets_openai_shaped_4xx_and_the_gateway_carries_on(tmp_path: Path) -> None:
    images = ImageServer()
    models = [{"name": "qwen3:4b", "engine": "ollama"}, {"name": "qwen2.5vl:3b", "engine": "ollama", "type": "vlm"},
              {"name": "nomic-embed-text", "engine": "ollama", "type": "embedding"}]
    try:
        with StandinServer.ollama(models=["qwen3:4b", "qwen2.5vl:3b", "nomic-embed-text"], name="ok") as backend:
            doc = gateway_config(models, ollama=[backend.url], gateway={"max-body-bytes": 2_000_000,
                                                                        "image-fetch-timeout": 2})
            with serve(doc, tmp_path) as gw, httpx.Client(base_url=gw.url, timeout=15) as client:
                failures = []
                for what, request, expected in bad_inputs(images.url, f"http://127.0.0.1:{_free_port()}",
                                                           backend.url):
                    resp = client.request(**request)
                    if resp.status_code not in expected:
                        failures.append(f"{what}: {resp.status_code} {resp.text[:200]}")
                    elif what in WAITRESS_ANSWERS:
                        assert "Traceback" not in resp.text
                    else:
                        openai_error(resp)
                # Unknown fields are passed through (engines take extras such as top_k), never a 500.
                extra = client.post("/v1/chat/completions", json={**CHAT, "top_k": 5, "x_vendor": {"a": 1}})
                forwarded = backend.bodies("/v1/chat/completions")[-1]
                normal = client.post("/v1/chat/completions", json=CHAT)
                stderr = gw.stderr()
    finally:
        images.close()
    assert not failures, "\n".join(failures)
    assert extra.status_code == 200 and forwarded["top_k"] == 5 and forwarded["x_vendor"] == {"a": 1}
    assert normal.status_code == 200 and normal.json()["choices"][0]["message"]["content"]
    assert "Traceback" not in stderr, stderr[-3000:]


def _raw_exchange(url: str, data: bytes, *, dribble: float = 0.0, limit: float = 5.0) -> bytes:
    """Send bytes on a fresh connection (one at a time, `dribble` s apart, slow-loris style) and
    return whatever comes back before the server closes or `limit` passes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=limit) as sock:
        if dribble:
            for i in range(0, len(data), 16):
                sock.sendall(data[i:i + 16])
                time.sleep(dribble)
        else:
            sock.sendall(data)
        reply = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                reply += chunk
                if b"\r\n\r\n" in reply and len(reply) > reply.index(b"\r\n\r\n") + 4:
                    break
    return reply


def _request_bytes(body: bytes, headers: str = "Content-Type: application/json\r\n") -> bytes:
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n{headers}Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


def test_slow_loris_clients_do_not_starve_others_and_slow_bad_requests_get_a_4xx(tmp_path: Path) -> None:
    with StandinServer.ollama(models=["qwen3:4b"], name="ok") as backend:
        doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[backend.url])
        with serve(doc, tmp_path, threads=4) as gw:
            # 40 connections that send half a request head and then stall hold no worker thread.
            stalled = []
            for _ in range(40):
                sock = socket.create_connection(("127.0.0.1", int(gw.url.rsplit(":", 1)[1])), timeout=5)
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Le")
                stalled.append(sock)
            try:
                times = []
                for _ in range(10):
                    started = time.monotonic()
                    assert httpx.post(gw.url + "/v1/chat/completions", json=CHAT, timeout=5).status_code == 200
                    times.append(time.monotonic() - started)
                # A malformed request dribbled in over about a second is still answered with a 4xx.
                reply = _raw_exchange(gw.url, _request_bytes(b'{"model": "qwen3:4b", "messages": [}'),
                                      dribble=0.02)
                # A body shorter than its Content-Length, then the client gives up: nothing hangs.
                cut = _request_bytes(b'{"model": "qwen3:4b"')[:-5]
                with socket.create_connection(("127.0.0.1", int(gw.url.rsplit(":", 1)[1])), timeout=5) as sock:
                    sock.sendall(cut)
                    sock.shutdown(socket.SHUT_WR)
                    leftover = sock.recv(65536)
            finally:
                for sock in stalled:
                    sock.close()
            assert httpx.get(gw.url + "/health", timeout=2).status_code == 200
            stderr = gw.stderr()
    assert max(times) < 1.0, times
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), reply[:300]
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert leftover == b""  # closed without an answer: there was no complete request to answer
    assert "Traceback" not in stderr


@pytest.fixture(scope="module")
def protocol_replies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, bytes, bytes]]:
    tmp = tmp_path_factory.mktemp("protocol")
    with StandinServer.ollama(models=["qwen3:4b"], name="ok") as backend:
        doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[backend.url])
        with serve(doc, tmp) as gw:
            replies = {}
            for what, data in PROTOCOL_GARBAGE.items():
                head, _, body = _raw_exchange(gw.url, data).partition(b"\r\n\r\n")
                replies[what] = (int(head.split(b" ")[1]), head, body)
            assert httpx.post(gw.url + "/v1/chat/completions", json=CHAT, timeout=5).status_code == 200
            assert "Traceback" not in gw.stderr()
    return replies


def test_http_level_garbage_gets_a_4xx_and_no_traceback(protocol_replies: dict[str, tuple[int, bytes, bytes]]) -> None:
    for what, (status, _, body) in protocol_replies.items():
        assert 400 <= status < 500, what
        assert b"Traceback" not in body, what


def test_http_level_garbage_is_answered_in_openai_shape(protocol_replies: dict[str, tuple[int, bytes, bytes]]) -> None:
    for _what, (_, head, body) in protocol_replies.items():
        assert b"application/json" in head.lower()
        assert isinstance(json.loads(body)["error"]["message"], str)


@pytest.mark.parametrize("keepalive", [
    pytest.param(False, id="new-connection-per-request"),
    # OpenAI clients keep connections alive: the drain must close them, or it never ends under load.
    pytest.param(True, id="keep-alive"),
])
def test_restart_under_load_drains_in_flight_requests_and_comes_back_fast(tmp_path: Path, keepalive: bool) -> None:
    with StandinServer.ollama(models=["qwen3:4b"], name="slowish") as backend:
        backend.set_fault("slow", seconds=0.5, paths=["/v1/chat/completions"])
        doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[backend.url])
        port = _free_port()
        old = _launch(doc, tmp_path, port, threads=8, tag="-old")
        load = Load(old.url, keepalive=keepalive).start(plain=5, stagger=0.1)
        new: Served | None = None
        try:
            time.sleep(1.0)
            old.proc.send_signal(signal.SIGTERM)  # what `systemctl restart` sends first
            term_at = time.monotonic()
            assert old.proc.wait(timeout=5) == 0, old.stderr()[-2000:]
            exited_at = time.monotonic()
            new = _launch(doc, tmp_path, port, threads=8, tag="-new")
            time.sleep(1.0)
        finally:
            load.stop()
            if new is not None:
                _stop(new)
            if old.proc.poll() is None:
                old.proc.kill()
    in_flight = [o for o in load.outcomes if o[0] < term_at - 0.05 and o[1] > term_at]
    assert len(in_flight) >= 2, "the drill needs requests in flight at SIGTERM"
    assert {o[2] for o in in_flight} == {200}, in_flight
    # Sent before SIGTERM: answered. Sent while down: refused, never a 5xx or a hang.
    before = {o[2] for o in load.outcomes if o[0] < term_at - 0.05}
    assert before == {200}, before
    assert not [o for o in load.outcomes if isinstance(o[2], int) and o[2] >= 500]
    assert exited_at - term_at < 2.0  # drained promptly: nothing else was in flight
    assert new is not None and new.ready_seconds <= STARTUP_TARGET_S * 1.5, new.ready_seconds
    after = [o for o in load.outcomes if o[0] > term_at + (exited_at - term_at) + new.ready_seconds]
    assert after and {o[2] for o in after} == {200}
    assert "Traceback" not in old.stderr() + new.stderr()
