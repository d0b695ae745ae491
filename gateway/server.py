"""Serving the app with waitress, with a graceful drain on SIGTERM (what ``systemctl restart`` sends):
stop accepting, let in-flight requests finish, then exit."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import waitress

from gateway.app import Gateway

log = logging.getLogger("vilms.server")
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class InflightTracker:
    """Counts requests from the call until the server closes their body (streams included)."""

    def __init__(self, app: WSGIApp) -> None:
        self._app = app
        self._lock = threading.Lock()
        self.count = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with self._lock:
            self.count += 1
        try:
            body = self._app(environ, start_response)
        except BaseException:
            self._done()
            raise
        return _Closing(body, self._done)

    def _done(self) -> None:
        with self._lock:
            self.count -= 1


class _Closing:
    __slots__ = ("_body", "_on_close")

    def __init__(self, body: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._body = body
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            closer = getattr(self._body, "close", None)
            if closer is not None:
                closer()
        finally:
            self._on_close()


def serve(gateway: Gateway, *, host: str, port: int, threads: int) -> None:
    service = gateway.config.service
    tracker = InflightTracker(gateway.app)
    server: Any = waitress.create_server(
        tracker,
        host=host,
        port=port,
        threads=threads,
        connection_limit=service.connection_limit,
        # waitress answers oversize bodies itself; ours answers first (OpenAI shape) via Content-Length.
        max_request_body_size=service.max_body_bytes + 1,
        channel_timeout=max(120, int(service.read_timeout) + 10),
        ident="vilms-gateway",
        clear_untrusted_proxy_headers=True,
    )
    gateway.start()
    draining = threading.Event()

    def on_term(signum: int, frame: Any) -> None:
        if draining.is_set():
            return
        draining.set()
        log.info("SIGTERM: no new connections; draining %d in-flight request(s)", tracker.count)
        server.del_channel()
        # shutdown, not close: the poll loop may still hold this fd in its current select() call.
        with contextlib.suppress(OSError):
            server.socket.shutdown(socket.SHUT_RDWR)
        threading.Thread(target=_drain, args=(server, tracker, service.drain_seconds), daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    log.info("vilms-gateway listening on http://%s:%s with %d threads", host, server.effective_port, threads)
    try:
        server.run()
    finally:
        gateway.close()
        log.info("vilms-gateway stopped")


def _drain(server: Any, tracker: InflightTracker, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        flushed = all(not getattr(ch, "total_outbufs_len", 0) for ch in list(server._map.values()))
        if tracker.count == 0 and flushed:
            break
        time.sleep(0.05)
    else:
        log.warning("drain limit of %.0f s reached with %d request(s) in flight", limit, tracker.count)
    # waitress leaves its loop cleanly on KeyboardInterrupt; SIGINT delivers one to the main thread.
    os.kill(os.getpid(), signal.SIGINT)
