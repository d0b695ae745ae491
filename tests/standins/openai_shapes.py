"""The OpenAI-compatible layer as Ollama (`flavor="ollama"`) and vLLM (`flavor="vllm"`) write it.

The two differ in small ways clients and the gateway can trip over: Ollama stamps
`system_fingerprint: "fp_ollama"` and repeats `role` in every delta; vLLM opens a stream with a
role-only delta, carries `logprobs`/`stop_reason`, and returns numeric-ish ids.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .common import count_tokens, dumps, echo_params, floats_to_base64, message_text, split_pieces

if TYPE_CHECKING:
    from .httpbase import Handler

NOT_PARAMS = frozenset({"model", "messages", "prompt", "input", "stream", "tools", "tool_choice", "user"})
OLLAMA_IMAGE_PREFIXES = (
    "data:;base64,",
    *(f"data:image/{t};base64," for t in ("jpeg", "jpg", "png", "webp")),
)


class RequestError(ValueError):
    """A request the real server would answer with 400 and this message."""


@dataclass
class Prompt:
    """What a chat request asked, as the fake model sees it."""

    user_text: str = ""
    images: int = 0
    image_bytes: list[int] = field(default_factory=list)
    prompt_tokens: int = 0


def _decode_ollama_image(url: str) -> int:
    """Ollama's OpenAI layer takes base64 data URLs only; return the image size in bytes."""
    for prefix in OLLAMA_IMAGE_PREFIXES:
        if url.startswith(prefix):
            try:
                return len(base64.b64decode(url[len(prefix) :], validate=True))
            except (binascii.Error, ValueError):
                raise RequestError("invalid message format") from None
    raise RequestError("invalid image input")


def parse_chat(messages: Any, flavor: str) -> Prompt:
    """Read OpenAI `messages`, enforcing what the real server rejects with 400."""
    if flavor == "ollama" and messages is None:
        messages = []  # Ollama answers an empty chat with a load-only, empty reply
    if not isinstance(messages, list) or (flavor == "vllm" and not messages):
        raise RequestError("invalid message format" if flavor == "ollama" else "messages: Field required")
    prompt = Prompt()
    words = 0
    for msg in messages:
        if not isinstance(msg, dict):
            raise RequestError("invalid message format")
        content = msg.get("content")
        if isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "image_url":
                    ref = part.get("image_url")
                    url = ref.get("url") if isinstance(ref, dict) else ref
                    if not isinstance(url, str):
                        raise RequestError("invalid message format")
                    size = _decode_ollama_image(url) if flavor == "ollama" else len(url)
                    prompt.images += 1
                    prompt.image_bytes.append(size)
                elif kind != "text" and flavor == "ollama":
                    raise RequestError("invalid message format")
        elif not isinstance(content, str) and not msg.get("tool_calls") and flavor == "ollama":
            raise RequestError(f"invalid message content type: {type(content).__name__}")
        text = message_text(content)
        words += count_tokens(text) if text else 0
        if msg.get("role") == "user":
            prompt.user_text = text
    prompt.prompt_tokens = max(1, words + prompt.images)
    return prompt


def params_header(body: dict[str, Any]) -> dict[str, str]:
    """The sampling parameters the server received, echoed as `X-Standin-Params`."""
    return {"X-Standin-Params": json.dumps(echo_params(body, NOT_PARAMS), separators=(",", ":"))}


def usage(prompt_tokens: int, completion_tokens: int, flavor: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if flavor == "vllm":
        out["prompt_tokens_details"] = None
    return out


def _new_id(prefix: str, flavor: str) -> str:
    return f"{prefix}-{random.randrange(999)}" if flavor == "ollama" else f"{prefix}-{uuid.uuid4().hex}"


def _envelope(obj_id: str, obj: str, model: str, flavor: str) -> dict[str, Any]:
    head: dict[str, Any] = {"id": obj_id, "object": obj, "created": int(time.time()), "model": model}
    if flavor == "ollama":
        head["system_fingerprint"] = "fp_ollama"
    return head


def _sse(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


def write_chat(h: Handler, flavor: str, model: str, text: str, prompt: Prompt, body: dict[str, Any]) -> None:
    """Answer /v1/chat/completions with `text`, as one JSON body or as an SSE stream."""
    settings = h.server.app.settings
    completion_tokens = count_tokens(text)
    use = usage(prompt.prompt_tokens, completion_tokens, flavor)
    headers = params_header(body)
    chat_id = _new_id("chatcmpl", flavor)
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": text}
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": "stop"}
        if flavor == "vllm":
            message.update({"tool_calls": [], "reasoning_content": None})
            choice.update({"logprobs": None, "stop_reason": None})
        resp = {**_envelope(chat_id, "chat.completion", model, flavor), "choices": [choice], "usage": use}
        if flavor == "vllm":
            resp["prompt_logprobs"] = None
        h.send_json(200, resp, headers)
        return

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        if flavor == "vllm":
            choice["logprobs"] = None
            if finish is not None:
                choice["stop_reason"] = None
        return {**_envelope(chat_id, "chat.completion.chunk", model, flavor), "choices": [choice]}

    h.begin_stream("text/event-stream", headers)
    if flavor == "vllm":
        h.send_event(_sse(chunk({"role": "assistant", "content": ""}, None)))
    for i, piece in enumerate(split_pieces(text, settings.chunks)):
        if i:
            h.pause(settings.chunk_delay)
        delta = {"role": "assistant", "content": piece} if flavor == "ollama" else {"content": piece}
        h.send_event(_sse(chunk(delta, None)))
    final = {"role": "assistant", "content": ""} if flavor == "ollama" else {"content": ""}
    h.send_event(_sse(chunk(final, "stop")))
    if (body.get("stream_options") or {}).get("include_usage"):
        h.send_event(_sse({**_envelope(chat_id, "chat.completion.chunk", model, flavor), "choices": [], "usage": use}))
    h.end_stream(b"data: [DONE]\n\n")


def write_completion(h: Handler, flavor: str, model: str, text: str, prompt_tokens: int, body: dict[str, Any]) -> None:
    """Answer /v1/completions (legacy text completion), plain or streamed."""
    settings = h.server.app.settings
    use = usage(prompt_tokens, count_tokens(text), flavor)
    cmpl_id = _new_id("cmpl", flavor)

    def choice(piece: str, finish: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"index": 0, "text": piece, "finish_reason": finish}
        if flavor == "vllm":
            out.update({"logprobs": None, "stop_reason": None})
        return out

    if not body.get("stream"):
        resp = {
            **_envelope(cmpl_id, "text_completion", model, flavor),
            "choices": [choice(text, "stop")],
            "usage": use,
        }
        h.send_json(200, resp, params_header(body))
        return
    h.begin_stream("text/event-stream", params_header(body))
    for i, piece in enumerate(split_pieces(text, settings.chunks)):
        if i:
            h.pause(settings.chunk_delay)
        h.send_event(_sse({**_envelope(cmpl_id, "text_completion", model, flavor), "choices": [choice(piece, None)]}))
    h.send_event(_sse({**_envelope(cmpl_id, "text_completion", model, flavor), "choices": [choice("", "stop")]}))
    if (body.get("stream_options") or {}).get("include_usage"):
        h.send_event(_sse({**_envelope(cmpl_id, "text_completion", model, flavor), "choices": [], "usage": use}))
    h.end_stream(b"data: [DONE]\n\n")


def embedding_inputs(value: Any) -> list[str]:
    """`input` as a list of texts; token-id arrays are hashed by their digits."""
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) for v in value):
            return [" ".join(map(str, value))]
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, list) for v in value):
            return [" ".join(map(str, v)) for v in value]
    raise RequestError("invalid input")


def embedding_list(flavor: str, model: str, vectors: list[list[float]], encoding: str, tokens: int) -> dict[str, Any]:
    data = [
        {
            "object": "embedding",
            "embedding": floats_to_base64(v) if str(encoding).lower() == "base64" else v,
            "index": i,
        }
        for i, v in enumerate(vectors)
    ]
    if flavor == "ollama":
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    return {
        "id": f"embd-{uuid.uuid4().hex}",
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": data,
        "usage": {
            "prompt_tokens": tokens,
            "total_tokens": tokens,
            "completion_tokens": 0,
            "prompt_tokens_details": None,
        },
    }
