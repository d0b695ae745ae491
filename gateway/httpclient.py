"""A small pooled HTTP/1.1 client for calls to the engines: raw sockets, httptools' parser.

Why not httpx here: on this hot path ``httpx.Client.send`` costs about 350 us of CPU per call
(URL merging, the cookie jar, auth and redirect plumbing, pool bookkeeping), and the gateway's whole
budget is 500 us per request (bench/RESULTS.md). ``http.client`` was the next step down, but its
head parsing goes through the ``email`` package and cost about a third of the app's time.
This does exactly what the gateway needs: POST a JSON body in one send, keep-alive, connect and
read timeouts, the body whole or as it arrives, with llhttp (through httptools, as uvicorn uses it)
doing the parsing and the chunked decoding. Failures surface as the httpx exceptions the rest of
the gateway handles. httpx still serves probes, image fetches and the remote embedding service,
where a few hundred microseconds do not matter.
"""

from __future__ import annotations

import math
import select
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import httptools
import httpx

from gateway import tls, turns
from gateway.engine_failures import (
    ConnectFailed,
    ConnectTimedOut,
    InHttpxTerms,
    SendFailed,
    SendTimedOut,
    Stale,
    keep_nothing,
)

# How long a request thread keeps its turn (gateway/turns.py) waiting for a backend that has been
# answering fast: handing the turn over and queueing for it again costs about this much on a busy
# core, so waiting in place is no slower, and requests stay in order. Kept short because everyone
# queued waits with it. A backend that takes longer is waited for without the turn from then on,
# until it answers this fast again.
HOLD_SECONDS = 0.00025
# Bigger request bodies (inlined images) may fill the socket buffer: send those without the turn.
_SEND_IN_TURN_BYTES = 256 * 1024
_READ_BYTES = 65536


class Pace:
    """Whether one backend answers within ``HOLD_SECONDS``, from its latest wait."""

    __slots__ = ("fast",)

    def __init__(self) -> None:
        self.fast = True


def _ready(sock: socket.socket, *, write: bool, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``sock`` to be readable (or writable)."""
    try:
        if write:
            return bool(select.select((), (sock,), (), seconds)[1])
        return bool(select.select((sock,), (), (), seconds)[0])
    except ValueError:  # descriptors past FD_SETSIZE: poll(), which counts in whole milliseconds
        poller = select.poll()
        poller.register(sock, select.POLLOUT if write else select.POLLIN)
        return bool(poller.poll(max(1, math.ceil(seconds * 1000))))


# Idle connections older than this are closed, not reused (``gateway.engine-idle-seconds``). The
# engines close them on their side: vLLM's API server runs uvicorn with
# ``timeout_keep_alive=envs.VLLM_HTTP_TIMEOUT_KEEP_ALIVE`` (5 s unless that variable is set), and
# uvicorn's own default is ``timeout_keep_alive: int = 5`` (uvicorn/config.py), which closes a
# connection 5 s after its last answer went out. Ollama serves ``&http.Server{Handler: nil}``
# (server/routes.go): no IdleTimeout and no ReadTimeout, so Go's net/http keeps idle connections
# until the server stops (``srvr.Close()`` on SIGINT/SIGTERM closes them all). The bound stays under
# uvicorn's 5 s with a second to spare for a busy host; the check before reuse and the one retry on
# a fresh connection (``Pool.post``) cover what a clock cannot: a restart, or a close we did not see.
DEFAULT_IDLE_SECONDS = 4.0


class _Message:
    """One response as httptools reports it (its callbacks), fed from one connection."""

    __slots__ = ("_headers", "complete", "encoding", "headers_done", "keep_alive", "parser", "parts", "raw_headers",
                 "status")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self._headers: dict[str, str] | None = None
        self.parts: list[bytes] = []
        self.headers_done = self.complete = self.keep_alive = False
        self.encoding: bytes | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))  # decoded only if asked for: most answers never are
        # The request asks for identity; anything else would be passed on as bytes nobody can read.
        if len(name) == 16 and name.lower() == b"content-encoding" and value.strip().lower() != b"identity":
            self.encoding = value

    def on_headers_complete(self) -> None:
        # llhttp answers these only until the message completes.
        self.status = self.parser.get_status_code()
        if self.status < 200:
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows it
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.parts.append(body)

    def on_message_complete(self) -> None:
        if self.status < 200:
            self.raw_headers.clear()
            self.encoding = None
            return
        self.complete = True
        self.forget_parser()

    def forget_parser(self) -> None:
        """The parser holds our callbacks and we hold it: a cycle only the garbage collector would
        free, and a collection every few hundred requests costs a request's time and more."""
        self.parser = None  # type: ignore[assignment]

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = {name.decode("latin-1").lower(): value.decode("latin-1")
                             for name, value in self.raw_headers}
        return self._headers

    @property
    def framed(self) -> bool:
        """Whether the body's end is marked (a length or chunks), rather than the connection's end."""
        return "content-length" in self.headers or "transfer-encoding" in self.headers


class _Connection:
    """One plain socket to a backend, the buffer its reads land in, and its waits.

    The socket is non-blocking and the waits are made here, not by a socket timeout: CPython polls
    a timeout socket before every send and receive, two system calls per request for nothing. A
    wait for the backend's answer first holds the request thread's turn for up to
    ``HOLD_SECONDS`` if the backend has been answering that fast, then gives the turn up.
    """

    __slots__ = ("buffer", "idle_since", "pace", "poller", "sock", "timeout", "view")

    def __init__(self, sock: socket.socket, pace: Pace) -> None:
        self.sock, self.pace = sock, pace
        self.timeout = 0.0  # per wait, set for each request
        self.idle_since = 0.0  # set when it goes back to the pool
        self.buffer = bytearray(_READ_BYTES)
        self.view = memoryview(self.buffer)
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)

    def usable(self) -> bool:
        """Whether an idle connection is still open. Between answers the backend has nothing to say,
        so anything readable is its close, a reset, or an unsolicited answer (a 408) before one: the
        rule of httpcore's ``has_expired`` (``is_readable`` on an idle connection) and urllib3's
        ``is_connection_dropped``. One poll() that does not wait, on a poll object made once per
        connection: the cheapest check (a non-blocking MSG_PEEK recv costs several times as much in
        Python, its usual answer being an exception), and the same for TLS sockets."""
        return not self.poller.poll(0)

    def send(self, data: bytes) -> None:
        try:
            if len(data) > _SEND_IN_TURN_BYTES:
                with turns.waiting():
                    self._send(data)
            else:
                self._send(data)
        except TimeoutError as exc:
            raise SendTimedOut(str(exc)) from exc
        except OSError as exc:
            raise SendFailed(str(exc) or type(exc).__name__) from exc

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view):]
            except BlockingIOError:
                with turns.waiting():
                    if not _ready(self.sock, write=True, seconds=self.timeout):
                        raise TimeoutError("backend did not take the request in time") from None

    def recv(self) -> int:
        sock = self.sock
        while True:
            if turns.held():
                started = time.monotonic()
                if not (self.pace.fast and _ready(sock, write=False, seconds=HOLD_SECONDS)):
                    with turns.waiting():
                        readable = _ready(sock, write=False, seconds=self.timeout)
                    self.pace.fast = time.monotonic() - started < HOLD_SECONDS
                    if not readable:
                        raise TimeoutError("backend did not answer in time")
            elif not _ready(sock, write=False, seconds=self.timeout):
                raise TimeoutError("backend did not answer in time")
            try:
                return sock.recv_into(self.buffer)
            except BlockingIOError:  # readable, then not after all: wait again
                continue

    def feed(self, message: _Message) -> bool:
        """Read once into ``message``; False when the backend closed the connection."""
        received = self.recv()
        if received == 0:
            return False
        message.parser.feed_data(self.view[:received])
        return True

    def close(self) -> None:
        self.sock.close()


class _TLSConnection(_Connection):
    """TLS sockets cannot be paced or left non-blocking simply: their waits give up the turn whole."""

    __slots__ = ()

    def send(self, data: bytes) -> None:
        self.sock.settimeout(self.timeout)
        try:
            with turns.waiting():
                self.sock.sendall(data)
        except TimeoutError as exc:
            raise SendTimedOut(str(exc)) from exc
        except OSError as exc:
            raise SendFailed(str(exc) or type(exc).__name__) from exc

    def recv(self) -> int:
        with turns.waiting():
            return self.sock.recv_into(self.buffer)


class Pool:
    """Keep-alive connections to one base URL; at most ``size`` idle ones are kept, none longer than
    ``idle_seconds``."""

    def __init__(self, base_url: str, size: int, idle_seconds: float = DEFAULT_IDLE_SECONDS) -> None:
        parts = urlsplit(base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self.prefix = quote(parts.path.rstrip("/"), safe="/%:@!$&'()*+,;=-._~")
        host = f"[{self._host}]" if ":" in self._host else self._host
        authority = host if parts.port is None else f"{host}:{self._port}"
        self._head = f"HTTP/1.1\r\nHost: {authority}\r\nAccept-Encoding: identity\r\n" \
                     "Content-Type: application/json\r\nContent-Length: "
        self._size = size
        self._idle_seconds = idle_seconds
        self._idle: list[_Connection] = []  # in the order they came back: the newest last
        self._lock = threading.Lock()
        self.pace = Pace()

    def _connect(self, connect_timeout: float) -> _Connection:
        with InHttpxTerms(keep_nothing, f"connect to {self._host}:{self._port}"):
            try:
                with turns.waiting():
                    sock = socket.create_connection((self._host, self._port), timeout=connect_timeout)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    if self._https:
                        context = tls.client_context()
                        return _TLSConnection(context.wrap_socket(sock, server_hostname=self._host), self.pace)
            except TimeoutError as exc:
                raise ConnectTimedOut(str(exc) or "timed out") from exc
            except OSError as exc:
                raise ConnectFailed(str(exc) or type(exc).__name__) from exc
        sock.setblocking(False)
        return _Connection(sock, self.pace)

    def _take_idle(self) -> _Connection | None:
        """The newest idle connection fit for reuse; the ones found too old or closed are closed."""
        while True:
            now = time.monotonic()
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
                expired = None
                if now - conn.idle_since > self._idle_seconds:
                    expired, self._idle = self._idle, []  # the ones under it are older still
            if expired is not None:
                conn.close()
                for old in expired:
                    old.close()
                return None
            if conn.usable():
                return conn
            conn.close()

    def post(self, path: str, body: bytes, *, read_timeout: float, connect_timeout: float, head: str = "") -> Response:
        """``head``: more header lines, each ending in CRLF (a service's Authorization, the hop marker)."""
        request = f"POST {self.prefix}{path} {self._head}{len(body)}\r\n{head}\r\n".encode("latin-1") + body
        conn = self._take_idle()
        if conn is not None:
            conn.timeout = read_timeout
            try:
                with InHttpxTerms(conn.close, "request"):
                    return Response(self, conn, self._exchange(conn, request, reused=True))
            except Stale:
                conn.close()
            # The backend closed it as the request went out (its keep-alive ran out, or it restarted):
            # nothing was answered, so the request goes once more, on a fresh connection and never on
            # another idle one, which may be just as stale. A fresh connection the backend hangs up
            # on is a real failure. Go's net/http (transport.go, shouldRetryRequest) draws the same
            # lines: a reused connection's EOF before the answer is "Probably an unfortunately
            # keep-alive timeout, just as the client was writing a request", retried on a new
            # connection, but "This was a fresh connection. There's no reason the server should've
            # hung up on us", not retried. Go retries only replayable requests; ours are: the body
            # is in memory, and an engine that closed unanswered has not produced anything.
            # httpcore and urllib3 make the check before reuse (``_take_idle``).
        conn = self._connect(connect_timeout)
        conn.timeout = read_timeout
        with InHttpxTerms(conn.close, "request"):
            return Response(self, conn, self._exchange(conn, request, reused=False))

    @staticmethod
    def _exchange(conn: _Connection, request: bytes, reused: bool) -> _Message:
        message = _Message()
        answered = False
        try:
            conn.send(request)
            while not message.headers_done:
                if not conn.feed(message):
                    if reused and not answered:
                        raise Stale
                    raise httpx.RemoteProtocolError("backend closed the connection without a whole answer")
                answered = True
        except (SendFailed, ConnectionError) as exc:
            if reused and not answered and isinstance(exc.__cause__ or exc, ConnectionError):
                raise Stale from None
            raise
        return message

    def release(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        with self._lock:
            if len(self._idle) < self._size:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class Response:
    """The part of httpx.Response the gateway uses: status_code, headers, read(), iter_raw(), close()."""

    def __init__(self, pool: Pool, conn: _Connection, message: _Message) -> None:
        self._pool, self._conn, self._message = pool, conn, message
        self.status_code = message.status
        # Set when the engine sent a Content-Encoding other than identity: the body is unreadable here.
        self.content_encoding = None if message.encoding is None else message.encoding.decode("latin-1")
        self._done = False

    @property
    def headers(self) -> dict[str, str]:
        """Names lower-cased, so ``.get()`` works as on httpx.Headers."""
        return self._message.headers

    def read(self) -> bytes:
        return b"".join(self.iter_raw())

    def iter_raw(self) -> Iterator[bytes]:
        message = self._message
        with InHttpxTerms(self.close, "response body"):
            while True:
                if message.parts:
                    parts, message.parts = message.parts, []
                    yield from parts
                if message.complete:
                    break
                if not self._conn.feed(message):
                    if message.framed:
                        raise httpx.RemoteProtocolError("backend closed the connection mid-body")
                    message.complete = True  # no length given: the body ends where the connection does
        self._finish()

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            if self._message.keep_alive:
                self._pool.release(self._conn)
            else:
                self._conn.close()

    def close(self) -> None:
        """Unread body left: the connection cannot be reused, drop it."""
        if not self._done:
            self._done = True
            self._message.forget_parser()
            self._conn.close()
