"""Helpers shared by the stand-in tests."""

from __future__ import annotations

import base64
from pathlib import Path

import openai
from openai.types.chat import ChatCompletionMessageParam

from tests.standins.fixtures import StandinServer

STANDINS = Path(__file__).parent / "standins"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


def client_for(server: StandinServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=5)


def sse_events(raw: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    return [block[len("data: ") :] for block in raw.decode().split("\n\n") if block.startswith("data: ")]
