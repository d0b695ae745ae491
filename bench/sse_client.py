"""Streamed chat timing from a raw keep-alive socket: time to first token and to the last byte.

On ``bench.rawhttp``'s connection, so the numbers are the proxy's, not an HTTP library's.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from bench.rawhttp import RawConnection


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


def _one(conn: RawConnection, request: bytes) -> tuple[float, float, int, bool]:
    started = time.perf_counter()
    conn.sock.sendall(request)
    head = conn.read_head()
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
    conn = RawConnection(url)
    request = conn.request(urlsplit(url).path, body,
                           {"Authorization": "Bearer sk-bench", "Accept": "text/event-stream"})
    timing = StreamTiming([], [], 0, 0)
    deadline = time.monotonic() + time_limit
    try:
        for i in range(warmup + count):
            if time.monotonic() > deadline:
                break
            try:
                ttft, last, events, closing = _one(conn, request)
            except (OSError, RuntimeError, ValueError):
                timing.failures += 1
                conn.close()
                conn = RawConnection(url)
                continue
            if i >= warmup:
                timing.ttft_ms.append(ttft)
                timing.last_byte_ms.append(last)
                timing.events = events
            if closing:
                timing.reconnects += 1
                conn.close()
                conn = RawConnection(url)
    finally:
        conn.close()
    return timing
