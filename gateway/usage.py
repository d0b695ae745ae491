"""Per-model figures for /metrics: requests, time to the answer, and tokens in and out from the
answers' ``usage``, labelled by the model asked for and the model that served (a local engine, a
peer box or a cloud), so "how much went to the cloud this week" is one query."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

from gateway import wirejson
from gateway.metrics import Metrics


class ModelFigures:
    """The labelled children are kept at hand, as the access-log middleware keeps its own:
    ``.labels()`` takes a lock and a lookup on every call. The names are the configured models
    and aliases (unknown ones are refused before), so the set stays small."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._answered: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._tokens: dict[tuple[str, str], tuple[Any, Any]] = {}

    def answered(self, requested: str, served: str, seconds: float) -> None:
        children = self._answered.get((requested, served))
        if children is None:
            children = (self._metrics.model_requests.labels(requested, served),
                        self._metrics.model_latency.labels(requested, served))
            self._answered[(requested, served)] = children
        children[0].inc()
        children[1].observe(seconds)

    def tokens(self, requested: str, served: str, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        children = self._tokens.get((requested, served))
        if children is None:
            children = (self._metrics.model_tokens.labels(requested, served, "in"),
                        self._metrics.model_tokens.labels(requested, served, "out"))
            self._tokens[(requested, served)] = children
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and prompt > 0:
            children[0].inc(prompt)
        if isinstance(completion, int) and completion > 0:
            children[1].inc(completion)


def wants_usage(body: dict[str, Any]) -> bool:
    """Whether a streamed request asked for the final usage chunk (``stream_options.include_usage``)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def watch_usage(events: Iterator[bytes], found: list[Any]) -> Generator[bytes, None, None]:
    """Pass SSE blocks through unchanged; append the ``usage`` of the chunk that carries one.

    With ``include_usage`` every chunk has a ``usage`` field, null except in the last chunk before
    ``[DONE]`` (OpenAI's API reference, ``stream_options``): only blocks that name it are parsed."""
    try:
        for block in events:
            if b'"usage"' in block:
                _collect(block, found)
            yield block
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


def _collect(block: bytes, found: list[Any]) -> None:
    for line in block.split(b"\n"):
        if line.startswith(b"data:") and b'"usage"' in line:
            try:
                data = wirejson.loads_lenient(line[5:])
            except ValueError:
                continue
            if isinstance(data, dict) and isinstance(data.get("usage"), dict):
                found.append(data["usage"])
