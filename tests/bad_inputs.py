"""The bad-input corpus the fault drills send at a running gateway: every item must get a 4xx."""

from __future__ import annotations

import base64
import json
from typing import Any

USER = [{"role": "user", "content": "hello"}]
CHAT = {"model": "qwen3:4b", "messages": USER}
JPEG_START = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x01\x00H\x00H\x00\x00"  # a JPEG file's first bytes


def bad_inputs(image_url: str, dead_url: str, backend_url: str) -> list[tuple[str, dict[str, Any], set[int]]]:
    """(what, httpx request kwargs, acceptable statuses)."""
    path = "/v1/chat/completions"

    def chat(**fields: Any) -> dict[str, Any]:
        return {"method": "POST", "url": path, "json": {**CHAT, **fields}}

    def raw(content: bytes, ctype: str = "application/json", url: str = path) -> dict[str, Any]:
        return {"method": "POST", "url": url, "content": content, "headers": {"content-type": ctype}}

    def image(url: str) -> dict[str, Any]:
        parts = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url}}]
        return {"method": "POST", "url": path,
                "json": {"model": "qwen2.5vl:3b", "messages": [{"role": "user", "content": parts}]}}

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    nested = b'{"model": "qwen3:4b", "messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    million_tokens = {"model": "qwen3:4b", "messages": [{"role": "user", "content": "tok " * 1_000_000}]}
    bad = {400}
    return [
        ("truncated JSON", raw(b'{"model": "qwen3:4b", "messages": ['), bad),
        ("not JSON at all", raw(b"model=qwen3:4b&messages=hi"), bad),
        ("invalid UTF-8", raw(b'{"model": "\xff\xfe", "messages": []}'), bad),
        ("NaN literal", raw(b'{"model": "qwen3:4b", "messages": [], "temperature": NaN}'), bad),
        # The strict client contract: each of these reached the engine before.
        ("NaN temperature", raw(b'{"model": "qwen3:4b", "messages": [{"role": "user", "content": "hi"}], '
                                b'"temperature": NaN}'), bad),
        ("Infinity in an extra field", raw(b'{"model": "qwen3:4b", "messages": [{"role": "user", "content": "hi"}],'
                                           b' "top_k": Infinity}'), bad),
        ("-Infinity top_p", raw(b'{"model": "qwen3:4b", "messages": [{"role": "user", "content": "hi"}], '
                                b'"top_p": -Infinity}'), bad),
        ("unknown part type", chat(messages=[{"role": "user", "content": [{"type": "file", "file": {}}]}]), bad),
        ("text part is a number", chat(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]), bad),
        ("max_tokens 0", chat(max_tokens=0), bad),
        ("max_completion_tokens negative", chat(max_completion_tokens=-1), bad),
        ("temperature 3", chat(temperature=3), bad),
        ("top_p 1.5", chat(top_p=1.5), bad),
        ("n 0", chat(n=0), bad),
        ("image: JPEG bytes claimed PNG", image("data:image/png;base64," + b64(JPEG_START)), bad),
        ("image: random bytes claimed PNG", image("data:image/png;base64," + b64(bytes(range(9, 99)))), bad),
        ("content type text/plain", raw(json.dumps(CHAT).encode(), "text/plain"), {415}),
        ("content type form (curl -d)", raw(json.dumps(CHAT).encode(), "application/x-www-form-urlencoded"), {415}),
        ("embeddings: content type text/plain", raw(b'{"model": "nomic-embed-text", "input": "hi"}', "text/plain",
                                                    url="/v1/embeddings"), {415}),
        ("embeddings: unknown model", {"method": "POST", "url": "/v1/embeddings",
                                       "json": {"model": "text-embedding-3-small", "input": "hi"}}, {404}),
        ("embeddings: a chat model", {"method": "POST", "url": "/v1/embeddings",
                                      "json": {"model": "qwen3:4b", "input": "hi"}}, {404}),
        ("JSON array", raw(b"[1, 2, 3]"), bad),
        ("JSON string", raw(b'"hello"'), bad),
        ("JSON null", raw(b"null"), bad),
        ("empty body", raw(b""), bad),
        ("whitespace body", raw(b"   \n  "), bad),
        ("model is a number", chat(model=123), bad),
        ("model missing", {"method": "POST", "url": path, "json": {"messages": USER}}, bad),
        ("messages is a string", chat(messages="hello"), bad),
        ("messages empty", chat(messages=[]), bad),
        ("message is a number", chat(messages=[1]), bad),
        ("role is a number", chat(messages=[{"role": 1, "content": "x"}]), bad),
        ("content is a number", chat(messages=[{"role": "user", "content": 5}]), bad),
        ("part without type", chat(messages=[{"role": "user", "content": [{"text": "x"}]}]), bad),
        ("stream is a string", chat(stream="yes"), bad),
        ("temperature is a string", chat(temperature="hot"), bad),
        ("max_tokens is a bool", chat(max_tokens=True), bad),
        ("unknown model", chat(model="gpt-4o"), {404}),
        ("deeply nested JSON", raw(nested), bad),
        # Declared bodies over max-body-bytes are refused by waitress itself (see WAITRESS_ANSWERS).
        ("huge body", raw(b'{"pad": "' + b"x" * 3_000_000 + b'"}'), {413}),
        ("a million-token string", {"method": "POST", "url": path, "json": million_tokens}, {413}),
        ("image: invalid base64", image("data:image/png;base64,!!!not-base64!!!"), bad),
        ("image: data URL of text", image("data:text/plain;base64,aGVsbG8="), bad),
        ("image: unreachable host", image(dead_url + "/cat.png"), bad),
        ("image: not an image", image(image_url + "/page.html"), bad),
        ("image: 404", image(image_url + "/missing.png"), bad),
        ("image: JSON endpoint", image(backend_url + "/api/version"), bad),
        ("image: file scheme", image("file:///etc/passwd"), bad),
        ("image: url is a number", chat(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": 7}}]}]), bad),
        ("content type XML", raw(b"<chat/>", "application/xml"), {415}),
        ("content type multipart", raw(b"--x\r\n", "multipart/form-data; boundary=x"), {415}),
        ("content type image", raw(b"\x89PNG", "image/png"), {415}),
        ("GET on chat", {"method": "GET", "url": path}, {405}),
        ("PUT on embeddings", {"method": "PUT", "url": "/v1/embeddings", "json": {}}, {405}),
        ("unknown route", raw(b"{}", url="/v1/completions-typo"), {404}),
        ("embeddings: input is a number", {"method": "POST", "url": "/v1/embeddings",
                                           "json": {"model": "nomic-embed-text", "input": 5}}, bad),
        ("embeddings: not JSON", raw(b"{{", url="/v1/embeddings"), bad),
    ]


# Raw HTTP that never parses as a request.
PROTOCOL_GARBAGE = {
    "invalid Content-Length": b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: abc\r\n\r\n{}",
    "invalid chunk size": b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"ZZ\r\nabc\r\n0\r\n\r\n",
    "not HTTP": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03hello\r\n\r\n",
    "oversized header": b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nX-Pad: " + b"a" * 300_000 + b"\r\n\r\n",
    # What a client meets when its body (an image, a long prompt) is over gateway.max-body-bytes.
    "declared body over the limit": b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
                                    b"Content-Length: 999999999\r\n\r\n{}",
}
