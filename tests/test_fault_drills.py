"""Fault drills against a real ``vilms-gateway serve`` process on loopback, under load.

What an operator of an edge box would notice: a backend host dying mid-load, a backend that accepts
connections and never answers, and ``systemctl restart`` while clients are busy. Garbage from clients
is drilled in test_bad_input_drills.py.
test_fallback.py and test_live_server.py cover each fault alone and in-process; these drills run them
against the served gateway with traffic flowing. Every loop is bounded in count and time.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway_harness import gateway_config
from tests.served_gateway import Served, free_port, launch, openai_error, serve, stop, wait_until
from tests.standins.fixtures import StandinServer

USER = [{"role": "user", "content": "hello"}]
CHAT = {"model": "qwen3:4b", "messages": USER}
STARTUP_TARGET_S = 1.0  # the "ready <= 1 s after start"; bench/ measures it, drills allow 2.5x for busy CI


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
                assert wait_until(lambda: _ready_backends(gw.url)[a.url]["cooled_down_for_seconds"] > 0, 3)
                time.sleep(0.8)
                served_by_b_while_a_dead = len(b.bodies("/v1/chat/completions"))
                a.start()
                # Back: the readiness probe re-admits it long before the 60 s cooldown would end.
                assert wait_until(lambda: _ready_backends(gw.url)[a.url]["cooled_down_for_seconds"] == 0
                                 and _ready_backends(gw.url)[a.url]["up"] is True, 3)
                before = len(a.bodies("/v1/chat/completions"))
                assert wait_until(lambda: len(a.bodies("/v1/chat/completions")) > before + 5, 3)
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
        served = launch(doc, tmp_path, free_port(), threads=3, threads_in_config=False)
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
            stop(served)
    assert waited < 0.5, f"/health waited {waited:.2f} s for a worker thread"


def test_slow_streams_do_not_hold_up_quick_requests(tmp_path: Path) -> None:
    """Streams from a slow engine keep their threads but give up their turn between chunks
    (gateway/turns.py), so quick requests pass between those chunks instead of waiting for them."""
    gap = 0.4
    with StandinServer.ollama(models=["slow:1b"], name="slow", chunks=6, chunk_delay=gap) as slow, \
            StandinServer.ollama(models=["qwen3:4b"], name="fast") as fast:
        doc = gateway_config([{"name": "slow:1b", "engine": "ollama", "base-url": slow.url},
                              {"name": "qwen3:4b", "engine": "ollama", "base-url": fast.url}])
        with serve(doc, tmp_path, threads=8) as gw:
            streamed: list[bytes] = []

            def stream() -> None:
                with httpx.stream("POST", gw.url + "/v1/chat/completions", timeout=15,
                                  json={"model": "slow:1b", "messages": USER, "stream": True}) as resp:
                    streamed.append(b"".join(resp.iter_bytes()))

            streams = [threading.Thread(target=stream) for _ in range(4)]
            for thread in streams:
                thread.start()
            assert wait_until(lambda: len(slow.request_log) >= 4, 5)
            quick = []
            with httpx.Client(base_url=gw.url, timeout=10) as client:
                for _ in range(20):
                    started = time.monotonic()
                    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
                    quick.append(time.monotonic() - started)
            streams_alive = sum(thread.is_alive() for thread in streams)
            for thread in streams:
                thread.join(15)
    assert streams_alive == 4, "the quick requests should have run while every stream was still open"
    assert len(streamed) == 4 and all(body.rstrip().endswith(b"data: [DONE]") for body in streamed)
    quick.sort()
    # Waiting for a stream's next chunk would put the median near gap / 2 (200 ms).
    assert quick[len(quick) // 2] < 0.1 and quick[-1] < gap, quick


@pytest.mark.parametrize("keepalive", [
    pytest.param(False, id="new-connection-per-request"),
    # OpenAI clients keep connections alive: the drain must close them, or it never ends under load.
    pytest.param(True, id="keep-alive"),
])
def test_restart_under_load_drains_in_flight_requests_and_comes_back_fast(tmp_path: Path, keepalive: bool) -> None:
    with StandinServer.ollama(models=["qwen3:4b"], name="slowish") as backend:
        backend.set_fault("slow", seconds=0.5, paths=["/v1/chat/completions"])
        doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[backend.url])
        port = free_port()
        old = launch(doc, tmp_path, port, threads=8, tag="-old")
        load = Load(old.url, keepalive=keepalive).start(plain=5, stagger=0.1)
        new: Served | None = None
        try:
            time.sleep(1.0)
            old.proc.send_signal(signal.SIGTERM)  # what `systemctl restart` sends first
            term_at = time.monotonic()
            assert old.proc.wait(timeout=5) == 0, old.stderr()[-2000:]
            exited_at = time.monotonic()
            new = launch(doc, tmp_path, port, threads=8, tag="-new")
            time.sleep(1.0)
        finally:
            load.stop()
            if new is not None:
                stop(new)
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
    assert new is not None and new.ready_seconds <= STARTUP_TARGET_S * 2.5, new.ready_seconds
    after = [o for o in load.outcomes if o[0] > term_at + (exited_at - term_at) + new.ready_seconds]
    assert after and {o[2] for o in after} == {200}
    assert "Traceback" not in old.stderr() + new.stderr()


def test_the_served_gateway_does_not_load_httpx_command_line_tool(tmp_path: Path) -> None:
    """httpx imports its CLI (rich, click, pygments) wherever those are installed, as they are on a
    box with local embeddings; the server skips it: start-up time and memory for nothing."""
    if importlib.util.find_spec("rich") is None or importlib.util.find_spec("click") is None:
        pytest.skip("rich and click are not installed here: httpx would not load its CLI anyway")
    with StandinServer.ollama(models=["qwen3:4b"]) as backend:
        doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[backend.url])
        served = launch(doc, tmp_path, free_port(), threads=4, env={"PYTHONPROFILEIMPORTTIME": "1"})
        try:
            answer = httpx.post(served.url + "/v1/chat/completions", json=CHAT, timeout=10)
        finally:
            stop(served)
    imported = {line.rsplit("|", 1)[1].strip() for line in served.stderr().splitlines()
                if line.startswith("import time:") and "|" in line}
    assert answer.status_code == 200 and "httpx" in imported
    cli_modules = imported & {"rich", "click", "pygments", "httpx._main"}
    assert not cli_modules, sorted(cli_modules)
