#!/usr/bin/env python3
"""Check a running ViLMS gateway the way a user's OpenAI client sees it.

Used by the Molecule scenarios' verify step and by `testbed/demo.sh`:

    verify_gateway.py --url http://172.17.0.2:8989/v1 --api-key KEY \
        --model LLM --model Qwen3-vllm --expect-model qwen3:4b-instruct \
        --embedding-model Embedding

Each check prints PASS/FAIL with what it saw; the last line is "N passed, M failed"
and the exit status is non-zero when anything failed.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from functools import partial

import openai
from openai import OpenAI
from openai.types.chat import ChatCompletion


class Checks:
    """Runs named checks, records the outcome, never stops at the first failure."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def run(self, name: str, check: Callable[[], str]) -> None:
        started = time.monotonic()
        try:
            detail = check()
        except Exception as exc:  # a failed check of any kind is reported, not raised
            self.failed += 1
            print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
            return
        self.passed += 1
        print(f"PASS {name} ({time.monotonic() - started:.2f}s): {detail}", flush=True)


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def check_models(client: OpenAI, expected: list[str]) -> str:
    ids = [model.id for model in client.models.list().data]
    expect(bool(ids), "the gateway lists no models")
    missing = [name for name in expected if name not in ids]
    expect(not missing, f"missing {missing} in {ids}")
    return ", ".join(ids)


def check_chat(client: OpenAI, model: str) -> str:
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello to the test bed."}],
        max_tokens=64,
    )
    text = reply.choices[0].message.content or ""
    expect(bool(text.strip()), f"empty answer: {reply!r}")
    expect(reply.choices[0].finish_reason is not None, "no finish_reason")
    return f"model={reply.model!r} answer={text[:60]!r}"


def check_stream(client: OpenAI, model: str) -> str:
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=64,
        stream=True,
    )
    pieces: list[str] = []
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        pieces.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
    text = "".join(pieces)
    content_chunks = sum(1 for piece in pieces if piece)
    expect(content_chunks >= 2, f"expected several content chunks, got {content_chunks}")
    expect(finish is not None, "the stream never sent a finish_reason")
    return f"{content_chunks} chunks, text={text[:60]!r}"


def cosine(left: list[float], right: list[float]) -> float:
    dot = sum(a * b for a, b in zip(left, right, strict=True))
    norm = math.sqrt(sum(a * a for a in left)) * math.sqrt(sum(b * b for b in right))
    return dot / norm


def check_embeddings(client: OpenAI, model: str) -> str:
    texts = [
        "The cat sits on the mat.",
        "A cat is sitting on a rug.",
        "Quarterly tax returns are due in April.",
    ]
    result = client.embeddings.create(model=model, input=texts)
    vectors = [item.embedding for item in sorted(result.data, key=lambda item: item.index)]
    expect(len(vectors) == len(texts), f"{len(vectors)} vectors for {len(texts)} inputs")
    dims = {len(vector) for vector in vectors}
    expect(len(dims) == 1 and dims.pop() > 0, "vectors of differing or zero length")
    expect(all(math.isfinite(x) for vector in vectors for x in vector), "non-finite values")
    near, far = cosine(vectors[0], vectors[1]), cosine(vectors[0], vectors[2])
    # A real sentence model puts paraphrases closer together than unrelated text.
    expect(near > far, f"paraphrase similarity {near:.3f} <= unrelated {far:.3f}")
    return f"{len(vectors[0])} dimensions, similar={near:.3f} unrelated={far:.3f}"


def _vision_request(client: OpenAI, model: str, image_url: str) -> ChatCompletion:
    return client.chat.completions.create(model=model, max_tokens=64, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": image_url}}]}])


def check_image_fetch(client: OpenAI, model: str, image_url: str) -> str:
    reply = _vision_request(client, model, image_url)
    text = reply.choices[0].message.content or ""
    # The stand-in engine counts the images it received inline; a real VLM describes it.
    expect(bool(text.strip()), f"empty answer: {reply!r}")
    return f"answer={text[:80]!r}"


def check_image_refused(client: OpenAI, model: str, image_url: str) -> str:
    try:
        _vision_request(client, model, image_url)
    except openai.BadRequestError as exc:
        code = (exc.body or {}).get("code") if isinstance(exc.body, dict) else None
        expect(code == "invalid_image", f"400, but code {code!r}: {exc}")
        return "400 invalid_image as expected"
    raise AssertionError(f"the gateway fetched {image_url}, an address on the box itself")


def check_unknown_model(client: OpenAI) -> str:
    try:
        client.chat.completions.create(
            model="no-such-model-vilms-test",
            messages=[{"role": "user", "content": "hi"}],
        )
    except openai.NotFoundError as exc:
        return f"404 as expected: {str(exc)[:80]}"
    raise AssertionError("an unknown model was answered instead of 404")


def check_bad_key(url: str) -> str:
    client = OpenAI(base_url=url, api_key="wrong-key-vilms-test", max_retries=0)
    try:
        client.models.list()
    except openai.AuthenticationError:
        return "401 as expected"
    raise AssertionError("a wrong API key was accepted")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="gateway base URL, e.g. http://HOST:8989/v1")
    parser.add_argument("--api-key", default="", help="bearer key (empty: the gateway has no auth)")
    parser.add_argument(
        "--model", action="append", default=[], help="chat model name or alias (repeatable; default LLM)"
    )
    parser.add_argument("--expect-model", action="append", default=[], help="a model id /v1/models must list")
    parser.add_argument("--embedding-model", default="", help="embedding model name or alias (empty: skip)")
    parser.add_argument("--vision-model", default="VLM", help="model for the image checks")
    parser.add_argument("--image-url", default="", help="an image the gateway must fetch (empty: skip)")
    parser.add_argument("--refused-image-url", default="", help="an image on the box the gateway must refuse")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    url = args.url.rstrip("/")
    if not url.endswith("/v1"):
        url += "/v1"
    client = OpenAI(base_url=url, api_key=args.api_key or "none", timeout=args.timeout, max_retries=0)
    checks = Checks()
    checks.run("list models", lambda: check_models(client, args.expect_model))
    for model in args.model or ["LLM"]:
        checks.run(f"chat completion ({model})", partial(check_chat, client, model))
        checks.run(f"streamed chat completion ({model})", partial(check_stream, client, model))
    if args.embedding_model:
        checks.run("embeddings", lambda: check_embeddings(client, args.embedding_model))
    if args.image_url:
        checks.run("image fetch", lambda: check_image_fetch(client, args.vision_model, args.image_url))
    if args.refused_image_url:
        checks.run("image on the box refused",
                   lambda: check_image_refused(client, args.vision_model, args.refused_image_url))
    checks.run("unknown model is 404", lambda: check_unknown_model(client))
    if args.api_key:
        checks.run("wrong API key is 401", lambda: check_bad_key(url))
    print(f"{checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
