"""Bad input at a served gateway: every malformed, hostile or slow request gets a 4xx in OpenAI's
error shape (never a 500, never a traceback), and the gateway answers normally afterwards."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.bad_inputs import PROTOCOL_GARBAGE, bad_inputs
from tests.gateway_harness import gateway_config
from tests.image_server import LOOPBACK_IMAGES, ImageServer
from tests.served_gateway import free_port, openai_error, serve
from tests.standins.fixtures import StandinServer

USER = [{"role": "user", "content": "hello"}]
CHAT = {"model": "qwen3:4b", "messages": USER}

# Refused by waitress before the app runs; the gateway renders those answers in OpenAI's shape too.
WAITRESS_ANSWERS = {"huge body", "a million-token string"}


def test_bad_input_corpus_gets_openai_shaped_4xx_and_the_gateway_carries_on(tmp_path: Path) -> None:
    images = ImageServer()
    models = [{"name": "qwen3:4b", "engine": "ollama"}, {"name": "qwen2.5vl:3b", "engine": "ollama", "type": "vlm"},
              {"name": "nomic-embed-text", "engine": "ollama", "type": "embedding"}]
    try:
        with StandinServer.ollama(models=["qwen3:4b", "qwen2.5vl:3b", "nomic-embed-text"], name="ok") as backend:
            doc = gateway_config(models, ollama=[backend.url], gateway={"max-body-bytes": 2_000_000,
                                                                        "image-fetch-timeout": 2, **LOOPBACK_IMAGES})
            with serve(doc, tmp_path) as gw, httpx.Client(base_url=gw.url, timeout=15) as client:
                failures = []
                for what, request, expected in bad_inputs(images.url, f"http://127.0.0.1:{free_port()}",
                                                           backend.url):
                    resp = client.request(**request)
                    if resp.status_code not in expected:
                        failures.append(f"{what}: {resp.status_code} {resp.text[:200]}")
                    elif what in WAITRESS_ANSWERS:
                        assert "Traceback" not in resp.text
                    else:
                        openai_error(resp)
                # Refused means refused: none of the corpus reached the engine.
                reached = [(path, body) for path, body in backend.requests if path.startswith("/v1/")]
                # Unknown fields are passed through (engines take extras such as top_k), never a 500.
                extra = client.post("/v1/chat/completions", json={**CHAT, "top_k": 5, "x_vendor": {"a": 1}})
                forwarded = backend.bodies("/v1/chat/completions")[-1]
                normal = client.post("/v1/chat/completions", json=CHAT)
                stderr = gw.stderr()
    finally:
        images.close()
    assert not failures, "\n".join(failures)
    assert reached == [], reached
    assert extra.status_code == 200 and forwarded["top_k"] == 5 and forwarded["x_vendor"] == {"a": 1}
    assert normal.status_code == 200 and normal.json()["choices"][0]["message"]["content"]
    assert "Traceback" not in stderr, stderr[-3000:]


def _raw_exchange(url: str, data: bytes, *, dribble: float = 0.0, limit: float = 5.0) -> bytes:
    """Send bytes on a fresh connection (one at a time, `dribble` s apart, slow-loris style) and
    return whatever comes back before the server closes or `limit` passes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=limit) as sock:
        if dribble:
            for i in range(0, len(data), 16):
                sock.sendall(data[i:i + 16])
                time.sleep(dribble)
        else:
            sock.sendall(data)
        reply = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                reply += chunk
                if b"\r\n\r\n" in reply and len(reply) > reply.index(b"\r\n\r\n") + 4:
                    break
    return reply


def _request_bytes(body: bytes, headers: str = "Content-Type: application/json\r\n") -> bytes:
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n{headers}Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


def test_slow_loris_clients_do_not_starve_others_and_slow_bad_requests_get_a_4xx(tmp_path: Path) -> None:
    with StandinServer.ollama(models=["qwen3:4b"], name="ok") as backend:
        doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[backend.url])
        with serve(doc, tmp_path, threads=4) as gw:
            # 40 connections that send half a request head and then stall hold no worker thread.
            stalled = []
            for _ in range(40):
                sock = socket.create_connection(("127.0.0.1", int(gw.url.rsplit(":", 1)[1])), timeout=5)
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Le")
                stalled.append(sock)
            try:
                times = []
                for _ in range(10):
                    started = time.monotonic()
                    assert httpx.post(gw.url + "/v1/chat/completions", json=CHAT, timeout=5).status_code == 200
                    times.append(time.monotonic() - started)
                # A malformed request dribbled in over about a second is still answered with a 4xx.
                reply = _raw_exchange(gw.url, _request_bytes(b'{"model": "qwen3:4b", "messages": [}'),
                                      dribble=0.02)
                # A body shorter than its Content-Length, then the client gives up: nothing hangs.
                cut = _request_bytes(b'{"model": "qwen3:4b"')[:-5]
                with socket.create_connection(("127.0.0.1", int(gw.url.rsplit(":", 1)[1])), timeout=5) as sock:
                    sock.sendall(cut)
                    sock.shutdown(socket.SHUT_WR)
                    leftover = sock.recv(65536)
            finally:
                for sock in stalled:
                    sock.close()
            assert httpx.get(gw.url + "/health", timeout=2).status_code == 200
            stderr = gw.stderr()
    assert max(times) < 1.0, times
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), reply[:300]
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert leftover == b""  # closed without an answer: there was no complete request to answer
    assert "Traceback" not in stderr


@pytest.fixture(scope="module")
def protocol_replies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, bytes, bytes]]:
    tmp = tmp_path_factory.mktemp("protocol")
    with StandinServer.ollama(models=["qwen3:4b"], name="ok") as backend:
        doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[backend.url])
        with serve(doc, tmp) as gw:
            replies = {}
            for what, data in PROTOCOL_GARBAGE.items():
                head, _, body = _raw_exchange(gw.url, data).partition(b"\r\n\r\n")
                replies[what] = (int(head.split(b" ")[1]), head, body)
            assert httpx.post(gw.url + "/v1/chat/completions", json=CHAT, timeout=5).status_code == 200
            assert "Traceback" not in gw.stderr()
    return replies


def test_http_level_garbage_gets_a_4xx_and_no_traceback(protocol_replies: dict[str, tuple[int, bytes, bytes]]) -> None:
    for what, (status, _, body) in protocol_replies.items():
        assert 400 <= status < 500, what
        assert b"Traceback" not in body, what


def test_http_level_garbage_is_answered_in_openai_shape(protocol_replies: dict[str, tuple[int, bytes, bytes]]) -> None:
    for _what, (_, head, body) in protocol_replies.items():
        assert b"application/json" in head.lower()
        assert isinstance(json.loads(body)["error"]["message"], str)


