"""The engine client's wire behaviour: one send per request, keep-alive, framing and its failures."""

from __future__ import annotations

import gc
import socket
from collections.abc import Callable, Iterable

import httpx
import pytest

from gateway.engine_failures import failure_kind
from gateway.httpclient import Pace, Pool, Response, _Connection
from tests.standin_helpers import RawEngine
from tests.standins.fixtures import StandinServer

CHAT = b'{"model":"m"}'


class _ScriptedSocket:
    """A backend socket that records what is sent and answers with the given reads, one per call
    (an exception in them is raised instead). Waits on it end at once: its descriptor is one end of
    a pair kept readable and writable. Idle, it looks open (answers come only after a request)
    (``_ScriptedConnection``) unless ``closed_while_idle``; ``send_fails`` is raised by its sends."""

    def __init__(self, reads: Iterable[bytes | Exception], *, closed_while_idle: bool = False,
                 send_fails: Exception | None = None) -> None:
        self.sent: list[bytes] = []
        self.reads = list(reads)
        self.closed = False
        self.closed_while_idle = closed_while_idle
        self.send_fails = send_fails
        self._ready, self._other = socket.socketpair()
        self._other.send(b"!")

    def fileno(self) -> int:
        return self._ready.fileno()

    def send(self, data: bytes) -> int:
        if self.send_fails is not None:
            raise self.send_fails
        self.sent.append(bytes(data))
        return len(data)

    def recv_into(self, buffer: bytearray) -> int:
        data = self.reads.pop(0) if self.reads else b""
        if isinstance(data, Exception):
            raise data
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.closed = True
        self._ready.close()
        self._other.close()


class _ScriptedConnection(_Connection):
    """A connection over a scripted socket, whose descriptor is always readable so that waits end
    at once: the check before reuse asks the script instead (the real check has its own test)."""

    __slots__ = ()

    def usable(self) -> bool:
        return not self.sock.closed_while_idle  # type: ignore[attr-defined]


def _pool_over(*reads: bytes, url: str = "http://127.0.0.1:1") -> tuple[Pool, _ScriptedSocket]:
    """A pool whose one idle connection is a scripted socket (port 1: a new connection fails)."""
    pool = Pool(url, 2)
    sock = _ScriptedSocket(reads)
    pool.release(_ScriptedConnection(sock, Pace()))  # type: ignore[arg-type]
    return pool, sock


def _post(pool: Pool, path: str = "/v1/chat/completions") -> Response:
    return pool.post(path, CHAT, read_timeout=5, connect_timeout=1)


def test_a_json_request_goes_out_in_one_send_with_its_head() -> None:
    pool, sock = _pool_over(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    assert _post(pool).read() == b"{}"
    assert len(sock.sent) == 1, sock.sent
    head, _, body = sock.sent[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert b"Host: 127.0.0.1:1" in lines
    assert b"Content-Length: 13" in lines
    assert b"Content-Type: application/json" in lines
    assert body == CHAT


def test_a_base_url_path_prefixes_every_request() -> None:
    pool, sock = _pool_over(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", url="http://127.0.0.1:1/engine/")
    _post(pool).read()
    assert sock.sent[0].startswith(b"POST /engine/v1/chat/completions HTTP/1.1\r\n")


def test_a_kept_alive_connection_is_reused_and_one_marked_close_is_not() -> None:
    pool, sock = _pool_over(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nb",
    )
    assert _post(pool).read() == b"a"
    assert not sock.closed
    assert _post(pool).read() == b"b"
    assert sock.closed and len(sock.sent) == 2
    with pytest.raises(httpx.ConnectError):  # nothing idle left: a new connection to port 1
        _post(pool)


def test_status_and_headers_are_read_case_insensitively_from_lower_cased_names() -> None:
    pool, _ = _pool_over(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n")
    response = _post(pool)
    assert response.status_code == 429
    assert response.headers.get("retry-after") == "3"


def test_an_interim_answer_is_skipped_for_the_one_after_it() -> None:
    pool, _ = _pool_over(b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n",
                         b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    response = _post(pool)
    assert (response.status_code, response.read()) == (200, b"ok")
    assert "x-interim" not in response.headers


def test_a_chunked_stream_yields_each_piece_as_it_arrives_decoded() -> None:
    pool, sock = _pool_over(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"6\r\ndata:1\r\n",
        b"6\r\nda",
        b"ta:2\r\n0\r\n\r\n",
    )
    response = _post(pool)
    assert list(response.iter_raw()) == [b"data:1", b"da", b"ta:2"]
    assert not sock.closed  # a whole chunked body leaves the connection reusable


def test_a_body_without_a_length_ends_with_the_connection() -> None:
    pool, sock = _pool_over(b"HTTP/1.1 200 OK\r\n\r\nhel", b"lo")
    assert _post(pool).read() == b"hello"
    assert sock.closed


@pytest.mark.parametrize("reads", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",),
])
def test_a_body_cut_short_is_a_protocol_error_and_drops_the_connection(reads: tuple[bytes, ...]) -> None:
    pool, sock = _pool_over(*reads)
    response = _post(pool)
    with pytest.raises(httpx.RemoteProtocolError, match="mid-body"):
        response.read()
    assert sock.closed


def test_a_malformed_answer_is_a_protocol_error_not_a_crash() -> None:
    pool, sock = _pool_over(b"SPDY/9 what\r\n\r\n")
    with pytest.raises(httpx.RemoteProtocolError, match="malformed"):
        _post(pool)
    assert sock.closed


def test_an_idle_connection_the_backend_closed_is_replaced_and_the_request_still_answered() -> None:
    with StandinServer.vllm(model="m") as server:
        pool = Pool(server.url, 2)
        stale = _ScriptedSocket([])  # the first read finds the connection closed
        pool.release(_ScriptedConnection(stale, Pace()))  # type: ignore[arg-type]
        try:
            body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
            response = pool.post("/v1/chat/completions", body, read_timeout=5, connect_timeout=1)
            assert response.status_code == 200
            assert b"choices" in response.read()
        finally:
            pool.close()
        assert stale.closed
        assert len(server.bodies("/v1/chat/completions")) == 1


def test_requests_sent_in_one_piece_reach_the_engine_intact_one_after_another() -> None:
    with StandinServer.vllm(model="m") as server:
        pool = Pool(server.url, 2)
        try:
            for n in range(3):
                body = b'{"model":"m","messages":[{"role":"user","content":"hi %d"}]}' % n
                response = pool.post("/v1/chat/completions", body, read_timeout=5, connect_timeout=1)
                assert response.status_code == 200
                assert b"hi %d" % n in response.read()
        finally:
            pool.close()
        assert [body["messages"][0]["content"] for body in server.bodies("/v1/chat/completions")] == \
            ["hi 0", "hi 1", "hi 2"]


def test_answers_leave_no_reference_cycles_for_the_collector() -> None:
    """A cycle per request means a collection every few hundred requests: a latency spike."""
    with StandinServer.vllm(model="m") as server:
        pool = Pool(server.url, 2)
        body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]%s}'
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(5):
                pool.post("/v1/chat/completions", body % b"", read_timeout=5, connect_timeout=1).read()
                streamed = pool.post("/v1/chat/completions", body % b',"stream":true', read_timeout=5,
                                     connect_timeout=1)
                assert b"[DONE]" in b"".join(streamed.iter_raw())
            gc.collect()
            left = [o for o in gc.garbage if type(o).__module__ in ("gateway.httpclient", "httptools.parser.parser")]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            pool.close()
        assert left == []


# -- stale connections: the age bound, the check before reuse, the one retry on a fresh connection --

CHAT_BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


def _idle(pool: Pool, sock: _ScriptedSocket, *, idle_for: float = 0.0) -> None:
    conn = _ScriptedConnection(sock, Pace())  # type: ignore[arg-type]
    pool.release(conn)
    conn.idle_since -= idle_for


def test_idle_connections_older_than_the_bound_are_closed_unused_all_at_once() -> None:
    with StandinServer.vllm(model="m") as server:
        pool = Pool(server.url, 16, idle_seconds=4.0)
        stale = [_ScriptedSocket([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]) for _ in range(9)]
        for sock in stale:
            _idle(pool, sock, idle_for=4.5)
        try:
            response = pool.post("/v1/chat/completions", CHAT_BODY, read_timeout=5, connect_timeout=1)
            assert (response.status_code, b"choices" in response.read()) == (200, True)
        finally:
            pool.close()
        assert all(sock.closed and not sock.sent for sock in stale)


def test_an_idle_connection_within_the_bound_is_reused() -> None:
    pool = Pool("http://127.0.0.1:1", 2, idle_seconds=4.0)
    sock = _ScriptedSocket([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"])
    _idle(pool, sock, idle_for=3.5)
    assert _post(pool).read() == b"{}"
    assert len(sock.sent) == 1


def test_an_idle_connection_found_closed_before_reuse_is_not_sent_to() -> None:
    with StandinServer.vllm(model="m") as server:
        pool = Pool(server.url, 16)
        closed = [_ScriptedSocket([], closed_while_idle=True) for _ in range(8)]
        for sock in closed:
            _idle(pool, sock)
        try:
            response = pool.post("/v1/chat/completions", CHAT_BODY, read_timeout=5, connect_timeout=1)
            assert response.status_code == 200
            response.read()
        finally:
            pool.close()
        assert all(sock.closed and not sock.sent for sock in closed)
        assert len(server.bodies("/v1/chat/completions")) == 1


def test_the_check_before_reuse_sees_a_real_socket_the_peer_closed() -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    conn = _Connection(ours, Pace())
    assert conn.usable()
    theirs.close()
    assert not conn.usable()
    ours.close()


@pytest.mark.parametrize("dies", ["closed_on_read", "reset_on_read", "reset_on_send"])
def test_a_reused_connection_that_dies_unanswered_is_retried_once_on_a_fresh_one(dies: str) -> None:
    with StandinServer.vllm(model="m") as server:
        pool = Pool(server.url, 4)
        if dies == "reset_on_send":
            sock = _ScriptedSocket([], send_fails=BrokenPipeError(32, "Broken pipe"))
        else:
            sock = _ScriptedSocket([b""] if dies == "closed_on_read" else [ConnectionResetError(104, "reset")])
        spare = _ScriptedSocket([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
        _idle(pool, spare)
        _idle(pool, sock)  # the newest: taken first
        try:
            response = pool.post("/v1/chat/completions", CHAT_BODY, read_timeout=5, connect_timeout=1)
            assert response.status_code == 200
            response.read()
        finally:
            pool.close()
        assert sock.closed
        assert spare.sent == []  # the retry went to a fresh connection, not to another idle one
        assert len(server.bodies("/v1/chat/completions")) == 1


def test_a_fresh_connection_that_dies_unanswered_is_a_failure_and_tried_once() -> None:
    with RawEngine() as backend:
        pool = Pool(backend.url, 4)
        stale = [_ScriptedSocket([b""]) for _ in range(2)]
        for sock in stale:
            _idle(pool, sock)
        try:
            with pytest.raises(httpx.RemoteProtocolError, match="without a whole answer"):
                pool.post("/v1/chat/completions", CHAT_BODY, read_timeout=5, connect_timeout=1)
        finally:
            pool.close()
    assert [len(sock.sent) for sock in stale] == [0, 1]  # one stale one tried, then one fresh one
    assert backend.accepted == 1


# -- each failure its own kind --------------------------------------------------------------------

def _kind_of(call: Callable[[], object]) -> str:
    with pytest.raises(httpx.TransportError) as caught:
        call()
    return failure_kind(caught.value)


def test_each_failure_of_the_engine_client_keeps_its_own_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    kinds: dict[str, str] = {}
    refused = socket.create_server(("127.0.0.1", 0))
    port = refused.getsockname()[1]
    refused.close()
    kinds["connect_error"] = _kind_of(lambda: _post(Pool(f"http://127.0.0.1:{port}", 2)))

    pool, _ = _pool_over(b"SPDY/9 what\r\n\r\n")
    kinds["protocol_error"] = _kind_of(lambda: _post(pool))

    pool, _ = _pool_over(b"HTTP/1.1 200 OK\r\nContent-", ConnectionResetError(104, "reset"))
    kinds["read_error"] = _kind_of(lambda: _post(pool))

    pool = Pool("http://127.0.0.1:1", 2)
    _idle(pool, _ScriptedSocket([], send_fails=OSError(5, "Input/output error")))
    kinds["write_error"] = _kind_of(lambda: _post(pool))

    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never reads nor answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        kinds["read_timeout"] = _kind_of(
            lambda: Pool(url, 2).post("/v1/chat/completions", CHAT, read_timeout=0.3, connect_timeout=1))
        big = b"x" * (64 * 1024 * 1024)  # more than both socket buffers hold
        kinds["write_timeout"] = _kind_of(
            lambda: Pool(url, 2).post("/v1/chat/completions", big, read_timeout=0.3, connect_timeout=1))

    def no_answer(*args: object, **kwargs: object) -> socket.socket:
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", no_answer)
    kinds["connect_timeout"] = _kind_of(lambda: _post(Pool("http://127.0.0.1:1", 2)))
    assert kinds == {kind: kind for kind in kinds}, kinds


def test_a_content_encoding_other_than_identity_is_flagged_and_identity_is_not() -> None:
    pool, _ = _pool_over(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n\x1f\x8b")
    assert _post(pool).content_encoding == "gzip"
    pool, _ = _pool_over(b"HTTP/1.1 200 OK\r\nContent-Encoding: identity\r\nContent-Length: 2\r\n\r\n{}")
    assert _post(pool).content_encoding is None
