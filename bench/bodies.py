"""The fixed bodies the static backend answers with, and the request bodies the load sends.

Every target (direct, gateway, LiteLLM) gets byte-identical requests and the backend answers
them with byte-identical responses, so only the proxy in between differs.
"""

from __future__ import annotations

import json

STREAM_CHUNKS = 20
EMBED_DIM = 384
CHAT_MODEL = "bench-chat"
STREAM_MODEL = "bench-stream"
EMBED_MODEL = "bench-embed"
PROMPT = [{"role": "user", "content": "Say something short about edge boxes."}]


def chat_request(model: str = CHAT_MODEL, stream: bool = False) -> bytes:
    body: dict[str, object] = {"model": model, "messages": PROMPT, "max_tokens": 32}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def embed_request(model: str = EMBED_MODEL) -> bytes:
    return json.dumps({"model": model, "input": "An edge box has a few cores."}).encode()


def chat_response() -> str:
    return json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": CHAT_MODEL,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Edge boxes are small and busy."}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
    }, separators=(",", ":"))


def _chunk(delta: dict[str, str], finish: str | None) -> str:
    return json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": STREAM_MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }, separators=(",", ":"))


def stream_response() -> str:
    events = [_chunk({"role": "assistant", "content": "tok0 "}, None)]
    events += [_chunk({"content": f"tok{i} "}, None) for i in range(1, STREAM_CHUNKS)]
    events.append(_chunk({}, "stop"))
    return "".join(f"data: {e}\n\n" for e in events) + "data: [DONE]\n\n"


def embed_response() -> str:
    vector = [round(((i * 37) % 200 - 100) / 1000, 4) for i in range(EMBED_DIM)]
    return json.dumps({
        "object": "list", "model": EMBED_MODEL,
        "data": [{"object": "embedding", "index": 0, "embedding": vector}],
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }, separators=(",", ":"))
