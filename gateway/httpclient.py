"""A small pooled HTTP/1.1 client on the standard library's http.client, for calls to the engines.

Why not httpx here: on this hot path ``httpx.Client.send`` costs about 350 us of CPU per call
(URL merging, the cookie jar, auth and redirect plumbing, pool bookkeeping) against about 70 us
for a kept-alive ``http.client`` connection, and the gateway's whole budget is 500 us per request
(bench/RESULTS.md). It does exactly what the gateway needs: POST a JSON body, keep-alive,
connect and read timeouts, the body whole or as it arrives. Failures surface as the httpx
exceptions the rest of the gateway handles. httpx still serves probes, image fetches and the
remote embedding service, where a few hundred microseconds do not matter.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from gateway import turns

# How long a request thread keeps its turn (gateway/turns.py) waiting for a backend that has been
# answering fast: handing the turn over and queueing for it again costs about this much on a busy
# core, so waiting in place is no slower, and requests stay in order. Kept short because everyone
# queued waits with it. A backend that takes longer is waited for without the turn from then on,
# until it answers this fast again.
HOLD_SECONDS = 0.00025
# Bigger request bodies (inlined images) may fill the socket buffer: send those without the turn.
_SEND_IN_TURN_BYTES = 256 * 1024

_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, http.client.CannotSendRequest)


class Pace:
    """Whether one backend answers within ``HOLD_SECONDS``, from its latest wait."""

    __slots__ = ("fast",)

    def __init__(self) -> None:
        self.fast = True


class _PacedSocket(socket.socket):
    """A socket whose blocking reads give up the request thread's turn, unless the backend has
    been answering within ``HOLD_SECONDS`` and does so again."""

    pace: Pace

    @classmethod
    def adopt(cls, sock: socket.socket, pace: Pace) -> _PacedSocket:
        paced = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        paced.pace = pace
        return paced

    def _readable_within(self, seconds: float) -> bool:
        try:
            return bool(select.select((self,), (), (), seconds)[0])
        except ValueError:  # descriptors past FD_SETSIZE: no hold (poll() cannot wait under 1 ms)
            return False

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        if not turns.held():
            return super().recv_into(buffer, nbytes, flags)
        started = time.monotonic()
        if self.pace.fast and self._readable_within(HOLD_SECONDS):
            return super().recv_into(buffer, nbytes, flags)
        with turns.waiting():
            received = super().recv_into(buffer, nbytes, flags)
        self.pace.fast = time.monotonic() - started < HOLD_SECONDS
        return received

    def sendall(self, data: Any, flags: int = 0) -> None:
        if len(data) <= _SEND_IN_TURN_BYTES:
            return super().sendall(data, flags)
        with turns.waiting():
            return super().sendall(data, flags)


class _Connection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, timeout: float, pace: Pace) -> None:
        super().__init__(host, port, timeout=timeout)
        self._pace = pace

    def connect(self) -> None:
        super().connect()
        assert self.sock is not None
        self.sock = _PacedSocket.adopt(self.sock, self._pace)

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        # http.client sends the head and the body with a send() each: two syscalls and, with
        # TCP_NODELAY, two segments for the engine to read. A JSON body goes out with its head.
        if isinstance(message_body, bytes) and not encode_chunked:
            self._buffer.extend((b"", message_body))  # type: ignore[attr-defined]
            message = b"\r\n".join(self._buffer)  # type: ignore[attr-defined]
            del self._buffer[:]  # type: ignore[attr-defined]
            self.send(message)
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


class Pool:
    """Keep-alive connections to one base URL; at most ``size`` idle ones are kept."""

    def __init__(self, base_url: str, size: int) -> None:
        parts = urlsplit(base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self.prefix = parts.path.rstrip("/")
        self._size = size
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self.pace = Pace()

    def _connect(self, connect_timeout: float) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._https:  # TLS sockets cannot be paced: calls to TLS backends give up the turn whole
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=connect_timeout)
        else:
            conn = _Connection(self._host, self._port, connect_timeout, self.pace)
        try:
            with turns.waiting():
                conn.connect()
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connect to {self._host}:{self._port} timed out") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"{self._host}:{self._port}: {exc}") from exc
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def post(self, path: str, body: bytes, *, read_timeout: float, connect_timeout: float) -> Response:
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        for _ in range(2):
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = self._connect(connect_timeout)
            assert conn.sock is not None
            conn.sock.settimeout(read_timeout)
            try:
                with self._blocking():
                    conn.request("POST", self.prefix + path, body=body, headers=headers)
                    raw = conn.getresponse()
            except _STALE as exc:
                conn.close()
                if reused:  # the backend closed an idle keep-alive connection: not an answer, try anew
                    continue
                raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__) from exc
            except TimeoutError as exc:
                conn.close()
                raise httpx.ReadTimeout("backend did not answer in time") from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
            return Response(self, conn, raw)
        raise httpx.RemoteProtocolError("backend closed the connection twice")

    def _blocking(self) -> contextlib.AbstractContextManager[None]:
        """Plain sockets give up the turn themselves when they block; TLS ones cannot."""
        return turns.waiting() if self._https else contextlib.nullcontext()

    def release(self, conn: http.client.HTTPConnection) -> None:
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

    def __init__(self, pool: Pool, conn: http.client.HTTPConnection, raw: http.client.HTTPResponse) -> None:
        self._pool, self._conn, self._raw = pool, conn, raw
        self.status_code = raw.status
        self.headers = raw.headers  # case-insensitive .get(), like httpx.Headers
        self._done = False

    def read(self) -> bytes:
        with self._body_errors("mid-body"), self._pool._blocking():
            data = self._raw.read()
        self._finish()
        return data

    def iter_raw(self) -> Iterator[bytes]:
        with self._body_errors("mid-stream"):
            while True:
                with self._pool._blocking():
                    chunk = self._raw.read1(65536)
                if not chunk:
                    break
                yield chunk
            self._raw.read()  # read1 stops at Content-Length without marking the response done
        self._finish()

    @contextlib.contextmanager
    def _body_errors(self, where: str) -> Iterator[None]:
        """A failed read leaves the connection unusable: drop it, and report it in httpx's terms."""
        try:
            yield
        except TimeoutError as exc:
            self.close()
            raise httpx.ReadTimeout(f"backend stalled {where}") from exc
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__) from exc

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            if self._raw.will_close or not self._raw.isclosed():
                self._conn.close()
            else:
                self._pool.release(self._conn)

    def close(self) -> None:
        """Unread body left: the connection cannot be reused, drop it."""
        if not self._done:
            self._done = True
            self._raw.close()
            self._conn.close()
