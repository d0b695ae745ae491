"""JSON on the request path: orjson where it agrees with the standard library, ``json`` where not.

orjson reads and writes a chat body five to ten times faster than ``json``, but it refuses some
of what ``json`` takes: ``NaN`` and ``Infinity``, UTF-16 bodies, lone surrogates, nesting deeper
than 1024. Whatever orjson refuses goes to ``json``, so the gateway accepts and rejects what it
did before, with ``json``'s own error messages. One difference stays: orjson reads integers past
64 bits as floats (it has no switch to refuse them); no OpenAI parameter takes one. Written, such
an integer goes out through ``json``, exact."""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(raw: bytes | str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value).encode()
