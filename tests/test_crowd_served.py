"""The served gateway at its defaults (no threads, slots or limits set) carries a crowd: dozens of
slow requests at once all finish, and normal requests are answered beside more idle connections
than select() can watch (FD_SETSIZE, 1,024)."""

from __future__ import annotations

import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.gateway_harness import gateway_config
from tests.served_gateway import serve
from tests.standins.fixtures import StandinServer

CHAT = {"model": "qwen3:4b", "messages": [{"role": "user", "content": "hi"}]}
IDLE_CLIENTS = 1200


def _doc(backend_url: str) -> dict[str, object]:
    doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[backend_url])
    doc["gateway"] = {"access-log": False}  # the gateway's own defaults, not the tests' fast ones
    return doc


@pytest.mark.slow
def test_at_defaults_sixty_four_slow_requests_at_once_all_finish(tmp_path: Path) -> None:
    with StandinServer.ollama(models=["qwen3:4b"], name="slow") as backend:
        backend.set_fault("slow", seconds=1.0, paths=["/v1/chat/completions"])
        with serve(_doc(backend.url), tmp_path, threads=None) as gw, ThreadPoolExecutor(64) as pool:
            statuses = list(pool.map(
                lambda _: httpx.post(gw.url + "/v1/chat/completions", json=CHAT, timeout=60).status_code,
                range(64)))
    assert statuses == [200] * 64  # the old defaults (16 threads) refused 49 of 64 with 429


@pytest.mark.slow
def test_at_defaults_requests_are_answered_beside_more_idle_clients_than_select_can_watch(tmp_path: Path) -> None:
    with StandinServer.ollama(models=["qwen3:4b"], name="idle") as backend, \
            serve(_doc(backend.url), tmp_path, threads=None) as gw:
        port = int(gw.url.rsplit(":", 1)[1])
        idle: list[socket.socket] = []
        try:
            for _ in range(IDLE_CLIENTS):  # keep-alive clients that asked once and went quiet
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
                idle.append(sock)
            assert len(os.listdir(f"/proc/{gw.proc.pid}/fd")) > 1024  # past what select() takes
            for _ in range(5):
                response = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, timeout=10)
                assert response.status_code == 200, response.text
            # Every idle client is still connected: none was dropped to make room.
            for sock in idle[:: len(idle) // 20]:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        finally:
            for sock in idle:
                sock.close()
        assert "Traceback" not in gw.stderr()
