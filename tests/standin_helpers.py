"""Helpers shared by the stand-in tests."""

from __future__ import annotations

import base64
import socket
import threading
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


class RawEngine:
    """An engine at the socket level: it reads one request per connection, sends ``answer`` (nothing:
    a hang-up without a word), closes the connection and counts the ones it accepted."""

    def __init__(self, answer: bytes = b"") -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.answer = answer
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.recv(65536)
                if self.answer:
                    conn.sendall(self.answer)

    def __enter__(self) -> RawEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
