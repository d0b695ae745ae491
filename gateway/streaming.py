"""Relaying a backend's Server-Sent Events to the client.

Bytes go out as they arrive, cut only at event boundaries, so if the backend dies mid-stream the
client gets whole events, then one error event and ``[DONE]``: never a half event, never a hang.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterator

import httpx

from gateway.upstream import UpstreamResult

_DONE = b"data: [DONE]\n\n"


def error_event(message: str, code: str = "upstream_stream_interrupted") -> bytes:
    payload = {"error": {"message": message, "type": "api_error", "param": None, "code": code}}
    return b"data: " + json.dumps(payload).encode() + b"\n\n" + _DONE


class SSERelay:
    """A WSGI body iterator. ``close()`` (called by the server, also when the client goes away)
    releases the backend connection."""

    def __init__(self, result: UpstreamResult, on_interrupted: Callable[[str], None]) -> None:
        self._result = result
        self._on_interrupted = on_interrupted
        self._iterator = self._relay()

    def __iter__(self) -> Iterator[bytes]:
        return self._iterator

    def _relay(self) -> Generator[bytes, None, None]:
        pending = b""
        chunks = self._result.chunks or iter(())
        try:
            for chunk in _prepend(self._result.first_chunk, chunks):
                pending += chunk
                cut = pending.rfind(b"\n\n")
                if cut >= 0:
                    yield pending[: cut + 2]
                    pending = pending[cut + 2 :]
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            reason = "timeout" if isinstance(exc, httpx.TimeoutException) else "stream_cut"
            self._on_interrupted(reason)
            yield error_event(f"The backend stream ended early ({reason}); the answer is incomplete.")
            return
        if pending.strip():
            yield pending if pending.endswith(b"\n\n") else pending + b"\n\n"

    def close(self) -> None:
        self._iterator.close()
        self._result.close()


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest
