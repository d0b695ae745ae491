"""Idle and slow clients cost no request thread (gateway/serving/channel.py): an idle keep-alive
connection is closed after the idle timeout, a client that never completes its request head after
the header timeout, and a client that asks for an answer bigger than waitress's output buffer
(``outbuf_high_watermark``, 16 MiB) and stops reading stalls nobody else's requests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from tests.gateway_harness import LiveApp, until

CHUNK = b"x" * 65536
BIG_CHUNKS = 640  # 40 MiB: past the 16 MiB watermark plus whatever the kernel's buffers hold


def _until(condition: Callable[[], bool], limit: float = 15.0) -> None:
    until(condition, limit, interval=0.01)


class _App:
    """/big: a 40 MiB answer in pieces (a stream: waitress sends it chunked); anything else: ok."""

    def __init__(self) -> None:
        self.big_closed = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ["PATH_INFO"] == "/big":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return self._big()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    def _big(self) -> Iterator[bytes]:
        try:
            for _ in range(BIG_CHUNKS):
                yield CHUNK
        finally:
            self.big_closed.set()


def _served(app: Any, **adjustments: Any) -> LiveApp:
    return LiveApp(app, threads=2, **adjustments)


def _closed_by_server(sock: socket.socket, limit: float = 15.0) -> bool:
    """Reads (and drops) what the server sends until it closes the connection."""
    sock.settimeout(limit)
    try:
        while sock.recv(1 << 20):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def _small_answered(live: LiveApp) -> None:
    response = httpx.get(live.url + "/small", timeout=10)
    assert response.text == "ok"


def test_a_client_that_stops_reading_a_large_answer_stalls_no_one_else() -> None:
    app = _App()
    with _served(app, channel_timeout=3, cleanup_interval=1) as live:
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(live.address)
        stalled.sendall(b"GET /big HTTP/1.1\r\nHost: gw\r\n\r\n")
        watermark = live.server.adj.outbuf_high_watermark
        # The writer now waits for the client to take some of the answer, which it never does.
        _until(lambda: any(channel.total_outbufs_len > watermark
                           for channel in list(live.server.active_channels.values())))
        for _ in range(5):
            _small_answered(live)  # served on the other thread, and by the turn the writer gave up
        # After the idle timeout the connection is closed: the writer is freed, the answer cut short.
        assert app.big_closed.wait(20), "the stalled writer was never freed"
        received = 0
        stalled.settimeout(15)
        while data := stalled.recv(1 << 20):
            received += len(data)
        assert received < len(CHUNK) * BIG_CHUNKS
        stalled.close()


def test_a_client_that_never_completes_its_head_is_dropped_after_the_header_timeout() -> None:
    with _served(_App(), header_timeout=1.0) as live:
        silent = socket.create_connection(live.address)  # connects and sends nothing
        dripping = socket.create_connection(live.address)
        dripping.sendall(b"GET /small HTTP/1.1\r\nHost: gw\r\n")
        started = time.monotonic()
        stop = threading.Event()

        def drip() -> None:  # a slow-loris: a header line now and then, never the blank line
            while not stop.wait(0.2):
                try:
                    dripping.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    return

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        try:
            _small_answered(live)  # neither of them holds one of the two request threads
            assert _closed_by_server(dripping), "a dripped head kept its connection"
            assert time.monotonic() - started >= 0.9
            assert _closed_by_server(silent), "a connection that sent nothing was kept"
        finally:
            stop.set()
            dripper.join(5)
            silent.close()
            dripping.close()
        _small_answered(live)


def test_a_head_completed_in_time_is_served_even_when_it_arrives_in_pieces() -> None:
    with _served(_App(), header_timeout=2.0) as live, socket.create_connection(live.address) as sock:
        for piece in (b"GET /small HTTP/1.1\r\n", b"Host: gw\r\n", b"\r\n"):
            sock.sendall(piece)
            time.sleep(0.1)
        sock.settimeout(10)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() -> None:
    served = _served(_App(), channel_timeout=2, cleanup_interval=1, header_timeout=30)
    with served as live, socket.create_connection(live.address) as sock:
        sock.sendall(b"GET /small HTTP/1.1\r\nHost: gw\r\n\r\n")
        sock.settimeout(10)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        answered = time.monotonic()
        assert _closed_by_server(sock, limit=20), "an idle keep-alive connection was kept"
        assert time.monotonic() - answered >= 1.5  # kept for the idle timeout, not dropped at once
