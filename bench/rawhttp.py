"""A keep-alive HTTP/1.1 client on a raw socket, for timing servers.

A hand-rolled reader (Content-Length or chunked) keeps the client's own cost to a few microseconds
per request, so what is timed is the server and the wire, not an HTTP library: httpx spent about
1.1 ms of its own on each local embedding call, a tenth of a batch-1 encode.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit


class RawConnection:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.sock = socket.create_connection((self.host, self.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def request(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
        """The bytes of one POST of ``body`` to ``path``, to send as often as needed."""
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Content-Type: application/json",
                 *(f"{name}: {value}" for name, value in (headers or {}).items()),
                 f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def take_until(self, marker: bytes) -> bytes:
        while (i := self.buf.find(marker)) < 0:
            self.fill()
        out, self.buf = self.buf[:i], self.buf[i + len(marker):]
        return out

    def take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self) -> str:
        """The response head, lower-cased; raises unless the status is 200."""
        head = self.take_until(b"\r\n\r\n").decode("latin-1").lower()
        if not head.startswith("http/1.1 200"):
            raise RuntimeError(head.split("\r\n", 1)[0])
        return head

    def read_body(self, head: str) -> bytes:
        if "transfer-encoding: chunked" not in head:
            return self.take(int(head.split("content-length:", 1)[1].split("\r\n", 1)[0]))
        body = b""
        while size := int(self.take_until(b"\r\n").split(b";")[0], 16):
            body += self.take(size)
            self.take(2)
        self.take_until(b"\r\n")
        return body

    def close(self) -> None:
        self.sock.close()
