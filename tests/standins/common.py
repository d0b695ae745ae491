"""Shared pieces of the stand-ins: JSON helpers, fake generation, fault modes, request log.

Stdlib only: this file is copied into a bare Debian image and run by its python3.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

FAULT_MODES = ("ok", "down", "hang", "slow", "error500", "error429", "cut")


# ---------------------------------------------------------------- JSON / time


def dumps(obj: Any) -> bytes:
    """Compact JSON, the way Go's encoder and FastAPI write it (no spaces)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def rfc3339_utc(ts: float | None = None) -> str:
    """Ollama's `created_at`: UTC with sub-second digits and a Z."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339_local(ts: float) -> str:
    """Ollama's `modified_at`: local time with the offset."""
    return datetime.fromtimestamp(ts).astimezone().isoformat()


def parse_duration(value: Any, default: float = 300.0) -> float:
    """OLLAMA_KEEP_ALIVE / keep_alive: seconds, or "5m", "1h30m"; negative means forever."""
    if value is None or value == "":
        return default
    if isinstance(value, (int, float)):
        return math.inf if value < 0 else float(value)
    text = str(value).strip()
    try:
        number = float(text)
        return math.inf if number < 0 else number
    except ValueError:
        pass
    if text.startswith("-"):
        return math.inf
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    if not parts:
        return default
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD")


def report_env(environ: Mapping[str, str], prefixes: tuple[str, ...]) -> dict[str, str]:
    """The environment a test wants proven to have reached the container; never credentials."""
    return {
        k: v
        for k, v in sorted(environ.items())
        if k.startswith(prefixes) and not any(m in k.upper() for m in SECRET_MARKERS)
    }


# ------------------------------------------------------------ fake generation


def message_text(content: Any) -> str:
    """The text of an OpenAI or Ollama message `content` (string or list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return " ".join(t for t in texts if isinstance(t, str))
    return ""


def last_user_text(messages: list[Any]) -> str:
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return message_text(msg.get("content"))
    return ""


def reply_text(server: str, model: str, user_text: str, images: int) -> str:
    """The deterministic answer: says which server and model answered, to what, with how many images."""
    return f"[{server}] {model}: {user_text} (images: {images})"


def split_pieces(text: str, count: int) -> list[str]:
    """Cut `text` into `count` consecutive non-empty pieces (fewer if the text is shorter)."""
    count = max(1, min(count, len(text))) if text else 1
    bounds = [round(i * len(text) / count) for i in range(count + 1)]
    return [text[bounds[i] : bounds[i + 1]] for i in range(count)]


def count_tokens(text: str) -> int:
    """A stable stand-in for a tokenizer: one token per word, at least one."""
    return max(1, len(text.split()))


def fake_embedding(text: str, dim: int) -> list[float]:
    """A unit vector derived from a hash of the text: same text, same vector."""
    raw = hashlib.shake_256(text.encode()).digest(dim * 2)
    values = [(v / 32767.5) - 1.0 for v in struct.unpack(f"<{dim}H", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 7) for v in values]


def floats_to_base64(values: list[float]) -> str:
    """OpenAI's `encoding_format: base64`: little-endian float32, base64."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def echo_params(body: dict[str, Any], skip: frozenset[str]) -> dict[str, Any]:
    """Scalar sampling parameters of a request, so tests can see what the gateway applied."""
    return {
        k: v for k, v in sorted(body.items()) if k not in skip and (v is None or isinstance(v, (int, float, str, bool)))
    }


# ------------------------------------------------------------------ settings


@dataclass
class Settings:
    """Knobs settable at start and at runtime (POST /_standin/config)."""

    chunks: int = 5
    chunk_delay: float = 0.0
    pull_delay: float = 0.0
    embedding_dim: int = 768

    def update(self, values: dict[str, Any]) -> None:
        for key in ("chunks", "embedding_dim"):
            if key in values:
                setattr(self, key, max(1, int(values[key])))
        for key in ("chunk_delay", "pull_delay"):
            if key in values:
                setattr(self, key, max(0.0, float(values[key])))

    def as_dict(self) -> dict[str, Any]:
        return {
            "chunks": self.chunks,
            "chunk_delay": self.chunk_delay,
            "pull_delay": self.pull_delay,
            "embedding_dim": self.embedding_dim,
        }


# --------------------------------------------------------------- request log


class RequestLog:
    """Every request a stand-in received (control endpoints excluded), for test assertions."""

    def __init__(self, limit: int = 10000) -> None:
        self._items: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._limit = limit

    def record(self, method: str, path: str, body: Any, headers: dict[str, str], fault: str) -> None:
        item = {
            "method": method,
            "path": path,
            "body": body,
            "headers": headers,
            "fault": fault,
            "time": time.time(),
        }
        with self._lock:
            self._items.append(item)
            del self._items[: -self._limit]

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


# -------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Fault:
    """One fault as applied to one request (defaults are what POST /_standin/fault assumes)."""

    mode: str
    seconds: float = 1.0  # slow: delay before answering
    retry_after: int = 1  # error429: Retry-After header
    after: int = 1  # cut: stream events sent before the connection drops
    message: str = ""  # error500/error429: error message ("injected fault: MODE" when empty)
    release: threading.Event = field(default_factory=threading.Event, compare=False)


_PARAM_TYPES: dict[str, type] = {"seconds": float, "retry_after": int, "after": int, "message": str}


class FaultState:
    """The active fault mode, optionally limited to the next `count` requests and to path prefixes.

    `release` wakes requests held by `hang`/`slow` whenever the fault is changed or reset, or the
    server stops, so teardown never waits on them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._clear()

    def _clear(self) -> None:
        self.mode = "ok"
        self.params: dict[str, Any] = {}
        self.count: int | None = None
        self.paths: list[str] = []

    def set(self, mode: str, **params: Any) -> dict[str, Any]:
        """Validate and install a fault; raises ValueError on a bad mode or parameter."""
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; expected one of {', '.join(FAULT_MODES)}")
        count = params.pop("count", None)
        paths = params.pop("paths", None) or []
        if isinstance(paths, str):
            paths = [paths]
        unknown = set(params) - set(_PARAM_TYPES)
        if unknown:
            raise ValueError(f"unknown fault parameter(s): {', '.join(sorted(unknown))}")
        typed = {k: _PARAM_TYPES[k](v) for k, v in params.items()}
        if any(v < 0 for k, v in typed.items() if k != "message"):
            raise ValueError("fault parameters must not be negative")
        with self._lock:
            self._wake()
            self._clear()
            self.mode = mode
            self.params = typed
            self.count = None if count is None else max(0, int(count))
            self.paths = [str(p) for p in paths]
            return self._describe()

    def reset(self) -> None:
        with self._lock:
            self._wake()
            self._clear()

    def release_all(self) -> None:
        with self._lock:
            self._wake()

    def _wake(self) -> None:
        self._release.set()
        self._release = threading.Event()

    def take(self, path: str) -> Fault | None:
        """The fault to apply to a request on `path`, consuming one of `count` if limited."""
        with self._lock:
            if self.mode == "ok" or (self.paths and not any(path.startswith(p) for p in self.paths)):
                return None
            if self.count is not None:
                if self.count <= 0:
                    return None
                self.count -= 1
            fault = Fault(mode=self.mode, release=self._release, **self.params)
            if not fault.message:
                fault = replace(fault, message=f"injected fault: {self.mode}")
            if self.count == 0:
                self._clear()
            return fault

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return self._describe()

    def _describe(self) -> dict[str, Any]:
        return {"mode": self.mode, **self.params, "count": self.count, "paths": list(self.paths)}
