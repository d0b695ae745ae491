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
from collections.abc import Callable, Iterator
from urllib.parse import quote, urlsplit

import httptools
import httpx

from gateway import tls, turns

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


class _InHttpxTerms:
    """A failed exchange leaves the connection unusable: drop it, and report the failure as the httpx
    exception the rest of the gateway handles. A class rather than ``@contextmanager``: it wraps
    every engine call twice, and a generator-based one costs several times as much to enter."""

    __slots__ = ("_drop", "_malformed", "_os_error", "_timeout")

    def __init__(
        self, drop: Callable[[], None], *, timeout: str, malformed: str, os_error: type[httpx.TransportError]
    ) -> None:
        self._drop, self._timeout, self._malformed, self._os_error = drop, timeout, malformed, os_error

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, trace: object) -> None:
        if exc is None:
            return
        if isinstance(exc, TimeoutError):  # before OSError, of which it is one
            self._drop()
            raise httpx.ReadTimeout(self._timeout) from exc
        if isinstance(exc, httptools.HttpParserError):
            self._drop()
            raise httpx.RemoteProtocolError(f"{self._malformed}: {exc}") from exc
        if isinstance(exc, httpx.RemoteProtocolError):
            self._drop()
        elif isinstance(exc, OSError):
            self._drop()
            raise self._os_error(str(exc) or type(exc).__name__) from exc


class _Stale(Exception):
    """A kept-alive connection the backend had already closed: nothing was answered, try anew."""


class _Message:
    """One response as httptools reports it (its callbacks), fed from one connection."""

    __slots__ = ("_headers", "complete", "headers_done", "keep_alive", "parser", "parts", "raw_headers", "status")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self._headers: dict[str, str] | None = None
        self.parts: list[bytes] = []
        self.headers_done = self.complete = self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))  # decoded only if asked for: most answers never are

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

    __slots__ = ("buffer", "pace", "sock", "timeout", "view")

    def __init__(self, sock: socket.socket, pace: Pace) -> None:
        self.sock, self.pace = sock, pace
        self.timeout = 0.0  # per wait, set for each request
        self.buffer = bytearray(_READ_BYTES)
        self.view = memoryview(self.buffer)

    def send(self, data: bytes) -> None:
        if len(data) > _SEND_IN_TURN_BYTES:
            with turns.waiting():
                self._send(data)
        else:
            self._send(data)

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
        with turns.waiting():
            self.sock.sendall(data)

    def recv(self) -> int:
        with turns.waiting():
            return self.sock.recv_into(self.buffer)


class Pool:
    """Keep-alive connections to one base URL; at most ``size`` idle ones are kept."""

    def __init__(self, base_url: str, size: int) -> None:
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
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self.pace = Pace()

    def _connect(self, connect_timeout: float) -> _Connection:
        try:
            with turns.waiting():
                sock = socket.create_connection((self._host, self._port), timeout=connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self._https:
                    context = tls.client_context()
                    return _TLSConnection(context.wrap_socket(sock, server_hostname=self._host), self.pace)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connect to {self._host}:{self._port} timed out") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"{self._host}:{self._port}: {exc}") from exc
        sock.setblocking(False)
        return _Connection(sock, self.pace)

    def post(self, path: str, body: bytes, *, read_timeout: float, connect_timeout: float) -> Response:
        request = f"POST {self.prefix}{path} {self._head}{len(body)}\r\n\r\n".encode("latin-1") + body
        for _ in range(2):
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = self._connect(connect_timeout)
            conn.timeout = read_timeout
            try:
                with _InHttpxTerms(conn.close, timeout="backend did not answer in time",
                                   malformed="malformed response", os_error=httpx.ReadError):
                    message = self._exchange(conn, request, reused)
            except _Stale:
                conn.close()
                continue
            return Response(self, conn, message)
        raise httpx.RemoteProtocolError("backend closed the connection twice")

    @staticmethod
    def _exchange(conn: _Connection, request: bytes, reused: bool) -> _Message:
        message = _Message()
        answered = False
        try:
            conn.send(request)
            while not message.headers_done:
                if not conn.feed(message):
                    if reused and not answered:
                        raise _Stale
                    raise httpx.RemoteProtocolError("backend closed the connection without a whole answer")
                answered = True
        except (BrokenPipeError, ConnectionResetError):
            if reused and not answered:
                raise _Stale from None
            raise
        return message

    def release(self, conn: _Connection) -> None:
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
        self._done = False

    @property
    def headers(self) -> dict[str, str]:
        """Names lower-cased, so ``.get()`` works as on httpx.Headers."""
        return self._message.headers

    def read(self) -> bytes:
        return b"".join(self.iter_raw())

    def iter_raw(self) -> Iterator[bytes]:
        message = self._message
        with _InHttpxTerms(self.close, timeout="backend stalled mid-body", malformed="malformed response body",
                           os_error=httpx.RemoteProtocolError):
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
