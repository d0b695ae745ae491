"""The loop thread on epoll (gateway/serving/eventloop.py): a request costs the loop the same few
questions however many idle clients are connected, and every connection stays served."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from gateway.serving.eventloop import HAVE_EPOLL
from tests.gateway_harness import LiveApp

GET_HELLO = b"GET /hello HTTP/1.1\r\nHost: gw\r\n\r\n"
IDLE = 300
REQUESTS = 20

pytestmark = pytest.mark.skipif(not HAVE_EPOLL, reason="epoll is Linux's")


def _hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def _ask(sock: socket.socket) -> None:
    sock.sendall(GET_HELLO)
    answer = b""
    while not answer.endswith(b"hello"):
        data = sock.recv(4096)
        assert data, "the server closed the connection"
        answer += data
    assert answer.startswith(b"HTTP/1.1 200 OK")


def _connect(live: LiveApp) -> socket.socket:
    sock = socket.create_connection(live.address, timeout=10)
    _ask(sock)
    return sock


def test_with_hundreds_of_idle_clients_a_request_asks_only_a_few_connections() -> None:
    """waitress's poll() loop asks every connection what it waits for and registers it again on
    every turn: 300 idle clients would make that 300 questions per request at least."""
    with LiveApp(_hello, threads=4, connection_limit=IDLE + 50) as live:
        loop = live.server.asyncore
        idle = [_connect(live) for _ in range(IDLE)]
        try:
            with socket.create_connection(live.address, timeout=10) as busy:
                _ask(busy)
                asked, changed = loop.asked, loop.registrations_changed
                for _ in range(REQUESTS):
                    _ask(busy)
                asked_per_request = (loop.asked - asked) / REQUESTS
                changed_per_request = (loop.registrations_changed - changed) / REQUESTS
            assert asked_per_request < 20, f"{asked_per_request:.0f} questions per request with {IDLE} idle"
            assert changed_per_request < 10, f"{changed_per_request:.0f} registrations changed per request"
            for sock in idle:  # every idle client's registration still holds: each is answered
                _ask(sock)
        finally:
            for sock in idle:
                sock.close()


def test_connections_that_come_and_go_are_served_on_reused_descriptors() -> None:
    """A closed connection's descriptor number comes back for the next one; its registration must
    be the new socket's, not the old one's."""
    with LiveApp(_hello, threads=2) as live:
        for _ in range(100):
            with socket.create_connection(live.address, timeout=10) as sock:
                _ask(sock)
        with socket.create_connection(live.address, timeout=10) as sock:
            _ask(sock)
            _ask(sock)


def test_where_epoll_is_not_used_waitress_poll_loop_serves() -> None:
    with LiveApp(_hello, threads=2, use_epoll=False) as live:
        assert not hasattr(live.server.asyncore, "asked")  # waitress's wasyncore
        with socket.create_connection(live.address, timeout=10) as sock:
            _ask(sock)
            _ask(sock)
