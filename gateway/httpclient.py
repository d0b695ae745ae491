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
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx

_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, http.client.CannotSendRequest)


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

    def _connect(self, connect_timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=connect_timeout)
        try:
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
        with self._body_errors("mid-body"):
            data = self._raw.read()
        self._finish()
        return data

    def iter_raw(self) -> Iterator[bytes]:
        with self._body_errors("mid-stream"):
            while chunk := self._raw.read1(65536):
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
