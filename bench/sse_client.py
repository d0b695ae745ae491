"""Streamed chat timing from a raw keep-alive socket: time to first token and to the last byte.

A hand-rolled HTTP/1.1 reader (Content-Length or chunked) keeps the client's own cost to a few
microseconds per event, so the numbers are the proxy's, not httpx's.
"""

from __future__ import annotations

import socket
import statistics
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class StreamTiming:
    ttft_ms: list[float]
    last_byte_ms: list[float]
    events: int
    failures: int
    reconnects: int = 0

    def summary(self) -> dict[str, float]:
        def pct(values: list[float], q: float) -> float:
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

        return {
            "streams": len(self.ttft_ms), "failures": self.failures, "server_closed": self.reconnects,
            "events_per_stream": self.events,
            "ttft_p50_ms": statistics.median(self.ttft_ms) if self.ttft_ms else float("nan"),
            "ttft_p99_ms": pct(self.ttft_ms, 0.99),
            "last_byte_p50_ms": statistics.median(self.last_byte_ms) if self.last_byte_ms else float("nan"),
            "last_byte_p99_ms": pct(self.last_byte_ms, 0.99),
        }


class _Conn:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

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


def _one(conn: _Conn, request: bytes) -> tuple[float, float, int, bool]:
    started = time.perf_counter()
    conn.sock.sendall(request)
    head = conn.take_until(b"\r\n\r\n").decode("latin-1").lower()
    if not head.startswith("http/1.1 200"):
        raise RuntimeError(head.split("\r\n", 1)[0])
    first = 0.0
    body = b""
    if "transfer-encoding: chunked" in head:
        while True:
            size = int(conn.take_until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                conn.take_until(b"\r\n")
                break
            piece = conn.take(size)
            conn.take(2)
            if not first and b"data: {" in piece:
                first = time.perf_counter()
            body += piece
    else:
        length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
        while len(conn.buf) < length:
            if not first and b"data: {" in conn.buf:
                first = time.perf_counter()
            conn.fill()
        body = conn.take(length)
        first = first or time.perf_counter()
    done = time.perf_counter()
    if not body.rstrip().endswith(b"data: [DONE]"):
        raise RuntimeError("stream did not end with [DONE]")
    # A server that closes the connection after a stream says so in its head; the reconnect is not timed.
    closing = "connection: close" in head
    return (first - started) * 1000, (done - started) * 1000, body.count(b"data: "), closing


def measure(url: str, body: bytes, *, count: int, warmup: int = 20, time_limit: float = 30.0) -> StreamTiming:
    """`count` sequential streams (concurrency 1) on one keep-alive connection."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
               f"Authorization: Bearer sk-bench\r\nAccept: text/event-stream\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    timing = StreamTiming([], [], 0, 0)
    conn = _Conn(host, port)
    deadline = time.monotonic() + time_limit
    try:
        for i in range(warmup + count):
            if time.monotonic() > deadline:
                break
            try:
                ttft, last, events, closing = _one(conn, request)
            except (OSError, RuntimeError, ValueError):
                timing.failures += 1
                conn.sock.close()
                conn = _Conn(host, port)
                continue
            if i >= warmup:
                timing.ttft_ms.append(ttft)
                timing.last_byte_ms.append(last)
                timing.events = events
            if closing:
                timing.reconnects += 1
                conn.sock.close()
                conn = _Conn(host, port)
    finally:
        conn.sock.close()
    return timing
