"""API keys of ``engine: openai`` models: where they come from, and failover between them.

A service that refuses a key (401, 403) will go on refusing it: the key is out for the model's
``key-cooldown`` (an hour unless set). A 429 says the key is rate limited: it rests for the
service's ``Retry-After`` (OpenAI's documented header on 429s) and the next key is tried at once.
Keys are only ever shown by their last four characters.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.config import ModelEntry

# When a 429 carries no usable Retry-After, the key rests this long.
DEFAULT_RATE_LIMIT_REST = 60.0
# Visible ASCII only: a key is written into a request head, where a space or line break would
# split the header (and a key file's stray "\r" is a classic).
_KEY = re.compile(r"[\x21-\x7e]+")


class KeysUnavailable(Exception):
    """A model's keys could not be read (the file, the environment variable)."""


def load_keys(model: ModelEntry, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The model's keys in the order they are tried: ``api-keys``, else the lines of
    ``api-key-file`` (blank lines and ``#`` comments skipped), else ``api-key-env`` (several keys
    separated by commas or white space)."""
    if model.api_keys:
        keys = list(model.api_keys)
        source = "api-keys"
    elif model.api_key_file:
        source = f"api-key-file {model.api_key_file}"
        try:
            text = Path(model.api_key_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise KeysUnavailable(f"model {model.name!r}: cannot read {source}: {exc.strerror or exc}") from exc
        keys = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    elif model.api_key_env:
        source = f"api-key-env {model.api_key_env}"
        value = (os.environ if environ is None else environ).get(model.api_key_env, "")
        keys = value.replace(",", " ").split()
        if not keys:
            raise KeysUnavailable(f"model {model.name!r}: the environment variable {model.api_key_env} is not set")
    else:
        return ()
    for number, key in enumerate(keys, 1):
        if not _KEY.fullmatch(key):
            raise KeysUnavailable(f"model {model.name!r}: key {number} in {source} holds spaces or control "
                                  "characters")
    return tuple(dict.fromkeys(keys))


def shown(key: str) -> str:
    """A key as logs and errors may show it: its last four characters, and only for a key long
    enough that they give nothing away."""
    return "..." + key[-4:] if len(key) >= 12 else "..."


@dataclass
class _KeyState:
    out_until: float = 0.0
    reason: str = ""


class KeyPool:
    """One model's keys, in order, with the time until which each is out of use."""

    def __init__(self, keys: tuple[str, ...], cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = keys
        self._heads = tuple(f"Authorization: Bearer {key}\r\n" for key in keys)
        self._states = [_KeyState() for _ in keys]
        self._cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._keys)

    def usable(self) -> list[int]:
        now = self._clock()
        return [i for i, state in enumerate(self._states) if state.out_until <= now]

    def head(self, index: int) -> str:
        """The request-head line that carries key ``index``."""
        return self._heads[index]

    def shown(self, index: int) -> str:
        return shown(self._keys[index])

    def take_out(self, index: int, status: int, retry_after: str | None) -> tuple[str, float]:
        """Put key ``index`` out of use after the service answered ``status``; ``(reason, seconds)``."""
        if status == 429:
            reason, seconds = "rate_limited", _seconds(retry_after)
        else:
            reason, seconds = "refused", self._cooldown
        with self._lock:
            state = self._states[index]
            state.out_until = max(state.out_until, self._clock() + seconds)
            state.reason = reason
        return reason, seconds

    def out_reasons(self) -> dict[str, int]:
        """How many keys are out now, by reason (for the error that says every key is out)."""
        now = self._clock()
        counts: dict[str, int] = {}
        for state in self._states:
            if state.out_until > now:
                counts[state.reason] = counts.get(state.reason, 0) + 1
        return counts

    def redact(self, text: str) -> str:
        """``text`` with any of these keys in it cut down to what :func:`shown` shows."""
        for key in self._keys:
            if key in text:
                text = text.replace(key, shown(key))
        return text


def _seconds(retry_after: str | None) -> float:
    # Retry-After is delay-seconds or an HTTP date (RFC 9110 10.2.3); services answer 429s with
    # seconds. A date, or nothing, rests the key for the default.
    value = (retry_after or "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return DEFAULT_RATE_LIMIT_REST
    return seconds if seconds >= 0 else DEFAULT_RATE_LIMIT_REST
