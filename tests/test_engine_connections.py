"""Pooled engine connections against engines that close them: a keep-alive that runs out after a
quiet spell, a restart on the same port. Against the stand-ins and against a real uvicorn server (the
one vLLM's OpenAI server runs), with the gateway served by waitress in front, as a client meets it."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import uvicorn

from tests.gateway_harness import client_for, gateway_config, live_gateway
from tests.standins.fixtures import StandinServer

MODEL = "Qwen/Qwen3-4B"
BURST = 8
# How long the engine holds each chat of a burst, so that all of them are in flight at once and the
# gateway needs that many connections, even on a busy CI host.
HOLD = 1.5
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def _until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Wait for ``condition`` (a state the engine reaches), up to ``seconds``, generous for busy CI."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.02)


def _chats(url: str, count: int) -> list[tuple[int, str]]:
    """``count`` chats at once through the gateway: (status, body) each."""
    def one(_: int) -> tuple[int, str]:
        response = httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=30)
        return response.status_code, response.text

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def _in_a_row(url: str, count: int) -> list[tuple[int, str]]:
    return [_chats(url, 1)[0] for _ in range(count)]


def _failures(url: str) -> list[str]:
    """The gateway's upstream_failures lines: any stale connection counted against an endpoint."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return [line for line in text.splitlines() if line.startswith("vilms_upstream_failures_total{")]


def _served(engine_url: str, **gateway: Any) -> Any:
    doc = gateway_config([{"name": MODEL, "engine": "vllm"}], vllm=[engine_url],
                         gateway={"threads": BURST + 4, **gateway})
    return live_gateway(doc, threads=BURST + 4)


def _all_ok(answers: list[tuple[int, str]]) -> None:
    assert [status for status, _ in answers] == [200] * len(answers), answers


def _ask(sock: socket.socket, path: str) -> bytes:
    """One GET on a raw connection, its whole answer read (by its Content-Length)."""
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    fields = dict(line.lower().split(b":", 1) for line in head.split(b"\r\n")[1:])
    length = int(fields[b"content-length"])
    while len(body) < length:
        body += sock.recv(65536)
    return head


# -- the stand-ins ------------------------------------------------------------------------------

def test_a_quiet_spell_past_the_engines_keep_alive_after_a_burst_fails_nothing() -> None:
    # The engine closes idle connections after 0.5 s, well inside the gateway's 4 s bound: only the
    # check before reuse and the retry on a fresh connection stand between them and a 503.
    with StandinServer.vllm(model=MODEL, keep_alive_seconds=0.5) as engine, _served(engine.url) as live:
        engine.set_fault("slow", seconds=HOLD, count=BURST, paths=["/v1/chat/completions"])
        _all_ok(_chats(live.url, BURST))
        assert engine.open_connections >= BURST  # the burst left that many kept alive in the pool
        _until(lambda: engine.open_connections == 0, 15, "the engine closing its idle connections")
        _all_ok(_in_a_row(live.url, 3))
        _all_ok(_chats(live.url, BURST))
        assert _failures(live.url) == []


def test_an_engine_restarted_on_the_same_port_is_answered_at_once() -> None:
    with StandinServer.vllm(model=MODEL) as engine, _served(engine.url) as live:
        engine.set_fault("slow", seconds=HOLD, count=BURST, paths=["/v1/chat/completions"])
        _all_ok(_chats(live.url, BURST))
        port = engine.port
        engine.stop()
        engine.start()
        assert engine.port == port
        _all_ok(_in_a_row(live.url, 3))
        _all_ok(_chats(live.url, BURST))
        assert _failures(live.url) == []


def test_the_ollama_stand_in_keeps_idle_connections_as_gos_server_does_and_drops_them_on_stop() -> None:
    with StandinServer.ollama(models=["m"]) as engine:
        sock = socket.create_connection((engine.host, engine.port))
        sock.settimeout(10)
        assert _ask(sock, "/api/version").startswith(b"HTTP/1.1 200")
        sock.settimeout(1.0)  # no IdleTimeout: still open a while later
        with pytest.raises(TimeoutError):
            sock.recv(1)
        engine.stop()
        sock.settimeout(10)
        assert sock.recv(1) == b""
        sock.close()


def test_the_vllm_stand_in_closes_an_idle_connection_after_its_keep_alive_only() -> None:
    assert StandinServer.vllm(start=False).app.keep_alive_seconds == 5.0  # uvicorn's, so vLLM's
    with StandinServer.vllm(model="m", keep_alive_seconds=0.5) as engine:
        sock = socket.create_connection((engine.host, engine.port))
        sock.settimeout(10)
        assert _ask(sock, "/health").startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the engine, not by this test's timeout
        assert time.monotonic() - started >= 0.4
        sock.close()


# -- a real uvicorn ---------------------------------------------------------------------------------

def _completion() -> bytes:
    return json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }).encode()


class UvicornEngine:
    """A tiny ASGI app that answers /v1/chat/completions as vLLM does, served by uvicorn on loopback
    in a thread; stop() and start() restart it on the same port. ``delay`` holds each chat, so a
    burst needs as many connections."""

    def __init__(self, timeout_keep_alive: float | None = None) -> None:
        self.timeout_keep_alive = timeout_keep_alive  # None: uvicorn's own default
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.delay = 0.0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        body = b"{}"
        if scope["path"] == "/v1/chat/completions":
            await asyncio.sleep(self.delay)
            body = _completion()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    def start(self) -> None:
        extra = {} if self.timeout_keep_alive is None else {"timeout_keep_alive": self.timeout_keep_alive}
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning",
                                interface="asgi3", **extra)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        _until(lambda: self._server is not None and self._server.started, 15, "uvicorn to start")

    def stop(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(15)
        assert not self._thread.is_alive()
        self._server = None

    @property
    def open_connections(self) -> int:
        return 0 if self._server is None else len(self._server.server_state.connections)


@pytest.fixture
def uvicorn_engine(request: pytest.FixtureRequest) -> Iterator[UvicornEngine]:
    engine = UvicornEngine(getattr(request, "param", None))
    engine.start()
    try:
        yield engine
    finally:
        if engine._server is not None:
            engine.stop()


def test_uvicorns_default_keep_alive_is_the_five_seconds_the_gateway_stays_under() -> None:
    assert uvicorn.Config(app=None).timeout_keep_alive == 5  # what vLLM's server closes idle connections at


def _burst_gap_requests(engine: UvicornEngine, live: Any, gap_seconds: float) -> None:
    engine.delay = HOLD
    _all_ok(_chats(live.url, BURST))
    assert engine.open_connections >= BURST
    engine.delay = 0.0
    _until(lambda: engine.open_connections == 0, gap_seconds, "uvicorn closing its idle connections")
    _all_ok(_in_a_row(live.url, 3))
    _all_ok(_chats(live.url, BURST))
    assert _failures(live.url) == []


@pytest.mark.parametrize("uvicorn_engine", [1], indirect=True)
def test_real_uvicorn_closing_idle_connections_fails_nothing_even_with_no_age_bound(
    uvicorn_engine: UvicornEngine,
) -> None:
    # The gateway keeps idle connections a minute here: the check before reuse and the fresh retry
    # alone must carry the requests after uvicorn closed every one.
    with _served(uvicorn_engine.url, **{"engine-idle-seconds": 60}) as live:
        _burst_gap_requests(uvicorn_engine, live, 15)


@pytest.mark.slow
def test_real_uvicorn_with_its_default_keep_alive_and_the_gateways_default_bound(
    uvicorn_engine: UvicornEngine,
) -> None:
    with _served(uvicorn_engine.url) as live:
        _burst_gap_requests(uvicorn_engine, live, 30)


def test_real_uvicorn_restarted_on_the_same_port_is_answered_at_once(uvicorn_engine: UvicornEngine) -> None:
    with _served(uvicorn_engine.url, **{"engine-idle-seconds": 60}) as live:
        uvicorn_engine.delay = HOLD
        _all_ok(_chats(live.url, BURST))
        uvicorn_engine.delay = 0.0
        uvicorn_engine.stop()
        uvicorn_engine.start()
        _all_ok(_in_a_row(live.url, 3))
        _all_ok(_chats(live.url, BURST))
        assert _failures(live.url) == []


# -- what the client is told --------------------------------------------------------------------

class _Canned:
    """An engine that answers every request on a connection with the same bytes, then closes it."""

    def __init__(self, answer: bytes) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.answer = answer
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(self.answer)

    def __enter__(self) -> _Canned:
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()


def _chat_through(engine_url: str, **gateway: Any) -> tuple[int, dict[str, Any], list[str]]:
    doc = gateway_config([{"name": MODEL, "engine": "vllm"}], vllm=[engine_url], gateway=gateway)
    with client_for(doc) as (client, _):
        answer = client.simulate_post("/v1/chat/completions", json=CHAT)
        metrics = client.simulate_get("/metrics").text
    failures = [line for line in metrics.splitlines() if line.startswith("vilms_upstream_failures_total{")]
    return answer.status_code, answer.json, failures


def test_an_answer_in_an_encoding_the_gateway_does_not_decode_is_a_clear_502() -> None:
    gzipped = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xab\xae\x05\x00C\xbf\xa6\xa3\x02\x00\x00\x00"
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n" \
             b"Content-Length: %d\r\n\r\n%s" % (len(gzipped), gzipped)
    with _Canned(answer) as engine:
        status, body, failures = _chat_through(engine.url)
    assert status == 502
    message = body["error"]["message"]
    assert "Content-Encoding 'gzip'" in message and "does not decode" in message, message
    assert failures == [f'vilms_upstream_failures_total{{endpoint="{engine.url}",reason="content_encoding"}} 1.0']


@pytest.mark.parametrize(("answer", "kind", "status"), [
    (b"SPDY/9 nonsense\r\n\r\n", "protocol_error", 503),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", "protocol_error", 503),  # closed mid-head
    (None, "read_timeout", 504),
])
def test_each_engine_failure_kind_reaches_the_metrics_and_the_message(
    answer: bytes | None, kind: str, status: int,
) -> None:
    if answer is None:
        with StandinServer.vllm(model=MODEL) as engine:
            engine.set_fault("hang", paths=["/v1/chat/completions"])
            got, body, failures = _chat_through(engine.url, **{"read-timeout": 0.3})
            engine.clear_fault()
            url = engine.url
    else:
        with _Canned(answer) as canned:
            got, body, failures = _chat_through(canned.url)
            url = canned.url
    assert got == status
    assert f"{url} ({kind})" in body["error"]["message"], body
    assert failures == [f'vilms_upstream_failures_total{{endpoint="{url}",reason="{kind}"}} 1.0'], failures
