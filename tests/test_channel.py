"""How waitress meets clients (gateway/serving/channel.py): request heads parsed as waitress parses them,
and a loop thread woken only when it must be, without a request ever waiting on its timeout."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from waitress.adjustments import Adjustments
from waitress.parser import HTTPRequestParser
from waitress.task import WSGITask

from gateway.serving.channel import _HeadWithBodyTask, _OnePassParser, create_server
from tests.gateway_harness import UnstartedServer, count_wakes, gateway_config, live_gateway
from tests.standins.fixtures import StandinServer

USER = [{"role": "user", "content": "hello"}]
BODY = b'{"model": "m", "messages": []}'

HEADS = [
    # what OpenAI clients, curl and wrk send
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw:8989\r\nContent-Type: application/json\r\n"
    b"Authorization: Bearer sk-1\r\nContent-Length: 30\r\n\r\n",
    b"GET /v1/models?x=1&y=%20z#frag HTTP/1.1\r\nHost: gw\r\nAccept: */*\r\nUser-Agent: curl/8.5\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET /health HTTP/1.0\r\n\r\n",
    b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
    # spacing, empty values, repeated and underscored names
    b"GET / HTTP/1.1\r\nX-A:   spaced value \t \r\nX-Empty:\r\nX-Tab:\tv\r\n\r\n",
    b"GET / HTTP/1.1\r\nAccept: a\r\naccept: b\r\nACCEPT:c\r\n\r\n",
    b"GET / HTTP/1.1\r\nX_Forwarded_For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Latin: caf\xe9 \x80\xff\r\n\r\n",
    # framing: chunked bodies, expect-continue, bad lengths, transfer codings waitress refuses
    b"POST /v1/embeddings HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 30\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    # what waitress's grammar rejects or treats apart: these take its own path
    b"GET / HTTP/1.1\r\nX-Folded: one\r\n  two\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n",
    b"GET / HTTP/1.1\r\nNo-Colon\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-CR: a\rb\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-LF: a\nb\r\n\r\n",
    b"GET / HTTP/1.1\r\n : v\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    b"GET //evil.example/path HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://proxy.example:8080/v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
]

SEEN = ("completed", "empty", "error", "headers", "command", "path", "query", "fragment", "version",
        "request_uri", "proxy_scheme", "proxy_netloc", "content_length", "chunked", "connection_close",
        "expect_continue", "headers_finished", "first_line")


def _parse(parser_class: type[HTTPRequestParser], data: bytes) -> dict[str, object]:
    parser = parser_class(Adjustments())
    consumed = parser.received(data)
    if not parser.completed and parser.error is None and parser.body_rcv is not None:
        consumed += parser.received(BODY)
    seen = {name: getattr(parser, name, None) for name in SEEN}
    seen["error"] = None if parser.error is None else (type(parser.error).__name__, parser.error.body)
    seen["consumed"] = consumed
    return seen


@pytest.mark.parametrize("head", HEADS, ids=range(len(HEADS)))
def test_request_heads_parse_exactly_as_waitress_parses_them(head: bytes) -> None:
    assert _parse(_OnePassParser, head) == _parse(HTTPRequestParser, head)


FOLD = b"X-Folded: one\r\n  two\r\n"  # sends a head down waitress's own path
# What waitress's main branch refuses (a repeated Host, Content-Length or Content-Type) and a
# Content-Length beside chunked framing: refused on the one-pass path and on waitress's path alike.
STRICTER = [
    (b"POST / HTTP/1.1\r\nContent-Length: 30\r\nContent-Length: 30\r\n", "Duplicate header: Content-Length"),
    (b"POST / HTTP/1.1\r\nContent-Length: 30\r\ncontent-length: 4\r\n", "Duplicate header: content-length"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n", "Duplicate header: Host"),
    (b"POST / HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Type: application/json\r\n",
     "Duplicate header: Content-Type"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n",
     "Content-Length with Transfer-Encoding: chunked"),
    (b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n",
     "Content-Length with Transfer-Encoding: chunked"),
]


@pytest.mark.parametrize("fields, message", STRICTER, ids=range(len(STRICTER)))
@pytest.mark.parametrize("path", ["one-pass", "waitress"])
def test_repeated_singleton_fields_and_length_beside_chunked_are_bad_requests(
    fields: bytes, message: str, path: str
) -> None:
    head = fields + (FOLD if path == "waitress" else b"") + b"\r\n"
    parsed = _parse(_OnePassParser, head)
    assert parsed["error"] == ("BadRequest", message) and parsed["completed"]


def test_a_head_split_across_reads_parses_the_same() -> None:
    head = HEADS[0]
    parser = _OnePassParser(Adjustments())
    for i in range(0, len(head), 7):
        parser.received(head[i : i + 7])
    parser.received(BODY)
    assert parser.completed and parser.error is None
    assert parser.headers["AUTHORIZATION"] == "Bearer sk-1" and parser.get_body_stream().read() == BODY


def test_keep_alive_requests_do_not_wake_the_loop_and_none_waits_for_it(ollama_a: StandinServer) -> None:
    # waitress wakes its loop thread after every request so that it watches the connection again;
    # here it is watched all along. Were a wake skipped while the loop is not watching, the next
    # request would sit unread until the loop's 1 s timeout. How many wakes remain depends on how
    # often a request ends while the loop is re-counting what it watches, which a busy host makes
    # common (8 of 20 seen): the gate itself is pinned down by the tests below, and here only
    # the stock behaviour, a wake per request, must be gone.
    doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[ollama_a.url])
    requests = 40
    with live_gateway(doc) as live, httpx.Client(base_url=live.url, timeout=5) as client:
        assert client.get("/health").status_code == 200
        wakes = count_wakes(live.server)
        slowest = 0.0
        for _ in range(requests):
            started = time.monotonic()
            reply = client.post("/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER})
            slowest = max(slowest, time.monotonic() - started)
            assert reply.status_code == 200 and reply.json()["choices"]
        assert wakes[0] < requests
        assert slowest < 0.5


@pytest.fixture
def gate() -> Iterator[UnstartedServer]:
    made = UnstartedServer(create_server(lambda environ, start_response: [], host="127.0.0.1", port=0, threads=1))
    yield made
    made.close()


def test_a_request_ending_while_the_loop_watches_its_connection_wakes_nothing(gate: UnstartedServer) -> None:
    gate.loop_turn()
    assert gate.finish_request() == 0


def test_a_request_ending_while_the_loop_works_out_what_to_watch_wakes_it(gate: UnstartedServer) -> None:
    gate.loop_turn()
    gate.channel._loop_reads = None  # the loop is inside readable(): its select() is not settled
    assert gate.finish_request() == 1


def test_a_connection_the_loop_stopped_reading_wakes_it_once_readable_again(gate: UnstartedServer) -> None:
    gate.channel.requests = [object(), object()]  # over the lookahead: the loop stops reading
    gate.loop_turn()
    gate.channel.requests = []
    assert gate.finish_request() == 1


def test_output_the_loop_does_not_watch_for_wakes_it(gate: UnstartedServer) -> None:
    gate.loop_turn()
    gate.channel.outbufs[-1].append(b"left over")
    gate.channel.total_outbufs_len = len(b"left over")
    assert gate.finish_request() == 1


def test_wakes_from_outside_a_request_always_go_through(gate: UnstartedServer) -> None:
    gate.loop_turn()
    before = gate.wakes[0]
    gate.server.pull_trigger()
    assert gate.wakes[0] == before + 1


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def _read_answers(sock: socket.socket, count: int, limit: float) -> list[bytes]:
    sock.settimeout(limit)
    data = b""
    while data.count(b"HTTP/1.1 ") < count or not data.endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return [b"HTTP/1.1 " + part for part in data.split(b"HTTP/1.1 ")[1:]]


def test_pipelined_requests_are_answered_in_order_without_waiting(ollama_a: StandinServer) -> None:
    doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[ollama_a.url])
    with live_gateway(doc) as live, _connect(live.url) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n" * 3)
        answers = _read_answers(sock, 3, limit=2)
        assert time.monotonic() - started < 0.5
    assert len(answers) == 3 and all(a.startswith(b"HTTP/1.1 200 OK") for a in answers)
    assert len({a.partition(b"\r\n\r\n")[2] for a in answers}) == 1


def test_connection_close_is_answered_then_closed_at_once(ollama_a: StandinServer) -> None:
    doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[ollama_a.url])
    with live_gateway(doc) as live, _connect(live.url) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        sock.settimeout(2)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        closed_after = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in data
    assert closed_after < 0.5


class _Server:
    def __init__(self, ident: str) -> None:
        self.adj = Adjustments(ident=ident)


class _Channel:
    def __init__(self, ident: str) -> None:
        self.server = _Server(ident)
        self.adj = self.server.adj
        self.addr = ("127.0.0.1", 50000)


ANSWERS = [
    ("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2"), ("X-Request-ID", "r1")]),
    ("200 OK", [("content-length", "2"), ("x-vilms-model", "m"), ("x-a", "1"), ("X-A", "2"), ("x-a", "3")]),
    ("400 Bad Request", [("Content-Length", "40"), ("content-type", "application/json")]),
    ("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]),  # a stream: no length
    ("204 No Content", [("Content-Length", "0")]),
    ("304 Not Modified", [("ETag", "x")]),
    ("200 OK", [("Content-Length", "2"), ("Connection", "keep-alive")]),
    ("200 OK", [("Content-Length", "2"), ("connection", "close")]),
    ("200 OK", [("Content-Length", "2"), ("Date", "Mon, 01 Jan 2024 00:00:00 GMT")]),
    ("200 OK", [("Content-Length", "2"), ("server", "engine/1.0")]),
    ("200 OK", [("Content-Length", "2"), ("X-Multi-Part-Name", "v"), ("WWW-Authenticate", "Bearer")]),
]
REQUESTS = [b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n", b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"HEAD / HTTP/1.1\r\nHost: gw\r\n\r\n"]


@pytest.mark.parametrize("ident", ["vilms-gateway", ""])
@pytest.mark.parametrize("request_head", REQUESTS, ids=range(len(REQUESTS)))
@pytest.mark.parametrize(("status", "headers"), ANSWERS, ids=range(len(ANSWERS)))
def test_response_heads_are_written_exactly_as_waitress_writes_them(
    status: str, headers: list[tuple[str, str]], request_head: bytes, ident: str
) -> None:
    def head(task_class: type[WSGITask]) -> tuple[bytes, bool, bool, list[tuple[str, str]]]:
        request = HTTPRequestParser(Adjustments())
        request.received(request_head)
        task = task_class(_Channel(ident), request)
        task.start_time = 1_764_561_600.25
        task.status, task.response_headers = status, list(headers)
        return task.build_response_header(), task.close_on_finish, task.chunked_response, task.response_headers

    ours, theirs = head(_HeadWithBodyTask), head(WSGITask)
    streamed = not any(name.lower() == "content-length" for name, _ in headers)
    if status == "200 OK" and request_head == REQUESTS[0] and streamed:
        # A stream to an HTTP/1.1 client that keeps alive: waitress closes the connection after it;
        # the gateway keeps it, and otherwise writes the same head.
        raw, close_on_finish, chunked, kept = theirs
        assert close_on_finish and b"Connection: close\r\n" in raw
        kept = [header for header in kept if header != ("Connection", "close")]
        theirs = (raw.replace(b"Connection: close\r\n", b""), False, chunked, kept)
    assert ours == theirs


def test_streamed_answers_keep_the_connection_for_the_next_request(ollama_a: StandinServer) -> None:
    doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[ollama_a.url])
    body = json.dumps({"model": "qwen3:4b", "messages": USER, "stream": True}).encode()
    request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
    request += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    with live_gateway(doc) as live, _connect(live.url) as sock:
        for _ in range(3):  # one connection, answer after answer
            sock.sendall(request)
            data = b""
            while not data.endswith(b"\r\n0\r\n\r\n"):
                chunk = sock.recv(65536)
                assert chunk, "the gateway closed the connection after a stream"
                data += chunk
            head, _, chunked = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK") and b"Transfer-Encoding: chunked" in head
            assert b"Connection: close" not in head
            events = _dechunk(chunked).decode().split("\n\n")
            assert events[-2] == "data: [DONE]" and len(events) > 3


def _dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out, data = out + data[:size], data[size + 2 :]
