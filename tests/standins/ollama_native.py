"""Ollama's native generation endpoints (/api/chat, /api/generate, /api/embed) as a mixin of `OllamaApp`.

Streams are NDJSON: one JSON object per line, `done: false` for each piece and a final `done: true`
line carrying the timing and token counters Ollama reports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import openai_shapes as oa
from .common import (
    count_tokens,
    dumps,
    echo_params,
    reply_text,
    rfc3339_utc,
    split_pieces,
)
from .ollama_base import OllamaBase

if TYPE_CHECKING:
    from .httpbase import Handler

NDJSON = "application/x-ndjson"


class NativeGeneration(OllamaBase):
    def _final_stats(self, prompt_tokens: int, eval_tokens: int) -> dict[str, Any]:
        return {
            "total_duration": 123_456_789,
            "load_duration": 1_234_567,
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": 2_345_678,
            "eval_count": eval_tokens,
            "eval_duration": 98_765_432,
        }

    def _native_reply(self, h: Handler, body: dict[str, Any], text: str, prompt_tokens: int, chat: bool) -> None:
        """Answer /api/chat (`message`) or /api/generate (`response`), NDJSON unless stream is false."""
        model = str(body["model"])

        def line(piece: str, done: bool) -> dict[str, Any]:
            out: dict[str, Any] = {"model": model, "created_at": rfc3339_utc()}
            if chat:
                out["message"] = {"role": "assistant", "content": piece}
            else:
                out["response"] = piece
            out["done"] = done
            return out

        raw_options = body.get("options")
        options: dict[str, Any] = raw_options if isinstance(raw_options, dict) else {}
        top: dict[str, Any] = {k: body[k] for k in ("format", "think") if k in body}
        headers = {"X-Standin-Params": dumps(echo_params({**top, **options}, frozenset())).decode()}
        final = {
            **line("", True),
            "done_reason": "stop",
            **self._final_stats(prompt_tokens, count_tokens(text)),
        }
        if body.get("stream", True) is False:
            final["message" if chat else "response"] = {"role": "assistant", "content": text} if chat else text
            h.send_json(200, final, headers)
            return
        h.begin_stream(NDJSON, headers)
        for i, piece in enumerate(split_pieces(text, self.settings.chunks)):
            if i:
                h.pause(self.settings.chunk_delay)
            h.send_event(dumps(line(piece, False)) + b"\n")
        h.end_stream(dumps(final) + b"\n")

    def chat(self, h: Handler, body: dict[str, Any], path: str) -> None:
        model = self._runnable_or_error(h, body.get("model"), path)
        if model is None:
            return
        messages = body.get("messages") or []
        self.store.touch(model.name, self._keep_alive(body))
        if not messages:
            h.send_json(
                200,
                {
                    "model": body["model"],
                    "created_at": rfc3339_utc(),
                    "message": {"role": "assistant", "content": ""},
                    "done_reason": "load",
                    "done": True,
                },
            )
            return
        images = sum(len(m.get("images") or []) for m in messages if isinstance(m, dict))
        user = next(
            (m.get("content", "") for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"),
            "",
        )
        text = reply_text(self.name, str(body["model"]), str(user), images)
        words = sum(count_tokens(str(m.get("content", ""))) for m in messages if isinstance(m, dict))
        self._native_reply(h, body, text, words + images, chat=True)

    def generate(self, h: Handler, body: dict[str, Any], path: str) -> None:
        model = self._runnable_or_error(h, body.get("model"), path)
        if model is None:
            return
        self.store.touch(model.name, self._keep_alive(body))
        prompt = str(body.get("prompt") or "")
        if not prompt:
            h.send_json(
                200,
                {
                    "model": body["model"],
                    "created_at": rfc3339_utc(),
                    "response": "",
                    "done": True,
                    "done_reason": "load",
                },
            )
            return
        images = len(body.get("images") or [])
        self._native_reply(
            h,
            body,
            reply_text(self.name, str(body["model"]), prompt, images),
            count_tokens(prompt) + images,
            chat=False,
        )

    def embed(self, h: Handler, body: dict[str, Any], path: str) -> None:
        model = self._runnable_or_error(h, body.get("model"), path)
        if model is None:
            return
        texts: list[str] = []
        if body.get("input") not in (None, "", []):
            try:
                texts = oa.embedding_inputs(body.get("input"))
            except oa.RequestError:
                h.send_json(400, {"error": "invalid input type"})
                return
        self.store.touch(model.name, self._keep_alive(body))
        tokens = sum(count_tokens(t) for t in texts)
        h.send_json(
            200,
            {
                "model": body["model"],
                "embeddings": self._vectors(texts, body.get("dimensions")),
                **{
                    k: v
                    for k, v in self._final_stats(tokens, 0).items()
                    if k in ("total_duration", "load_duration", "prompt_eval_count")
                },
            },
        )

    def embeddings_legacy(self, h: Handler, body: dict[str, Any], path: str) -> None:
        model = self._runnable_or_error(h, body.get("model"), path)
        if model is not None:
            h.send_json(200, {"embedding": self._vectors([str(body.get("prompt") or "")], None)[0]})
