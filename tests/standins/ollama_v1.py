"""Ollama's OpenAI layer (/v1/*) for the Ollama stand-in, as a mixin of `OllamaApp`.

Real Ollama converts each /v1 request to its native form in a middleware first (so malformed
messages, and any image that is not a base64 data URL, are 400 before the model is even looked
up) and re-wraps native errors in OpenAI's error envelope.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import openai_shapes as oa
from .common import count_tokens, reply_text
from .ollama_base import OllamaBase
from .ollama_store import namespace

if TYPE_CHECKING:
    from .httpbase import Handler


class OpenAILayer(OllamaBase):
    def v1_models(self, h: Handler, body: dict[str, Any], path: str) -> None:
        data = [
            {"id": m.name, "object": "model", "created": int(m.modified), "owned_by": namespace(m.name)}
            for m in self.store.models()
        ]
        # Go marshals an empty slice that was never appended to as null: so does Ollama here.
        h.send_json(200, {"object": "list", "data": data or None})

    def _v1_model(self, h: Handler, name: str) -> None:
        model = self.store.get(name)
        if model is None:
            self.send_error(h, 404, f"model '{name}' not found", "/v1/models")
            return
        h.send_json(200, {"id": name, "object": "model", "created": int(model.modified), "owned_by": namespace(name)})

    def v1_chat(self, h: Handler, body: dict[str, Any], path: str) -> None:
        try:
            prompt = oa.parse_chat(body.get("messages"), "ollama")
        except oa.RequestError as exc:
            self.send_error(h, 400, str(exc), path)
            return
        model = self._runnable_or_error(h, body.get("model"), path)
        if model is None:
            return
        self.store.touch(model.name, self.keep_alive)
        text = reply_text(self.name, str(body["model"]), prompt.user_text, prompt.images)
        oa.write_chat(h, "ollama", str(body["model"]), text, prompt, body)

    def v1_completions(self, h: Handler, body: dict[str, Any], path: str) -> None:
        model = self._runnable_or_error(h, body.get("model"), path)
        if model is None:
            return
        prompt = str(body.get("prompt") or "")
        text = reply_text(self.name, str(body["model"]), prompt, 0)
        oa.write_completion(h, "ollama", str(body["model"]), text, count_tokens(prompt), body)

    def v1_embeddings(self, h: Handler, body: dict[str, Any], path: str) -> None:
        try:
            texts = oa.embedding_inputs(body.get("input"))
        except oa.RequestError as exc:
            self.send_error(h, 400, str(exc), path)
            return
        encoding = str(body.get("encoding_format") or "float")
        if encoding.lower() not in ("float", "base64"):
            self.send_error(h, 400, f"invalid encoding_format {encoding!r}: must be 'float' or 'base64'", path)
            return
        model = self._runnable_or_error(h, body.get("model"), path)
        if model is None:
            return
        vectors = self._vectors(texts, body.get("dimensions"))
        tokens = sum(count_tokens(t) for t in texts)
        h.send_json(200, oa.embedding_list("ollama", str(body["model"]), vectors, encoding, tokens))
