"""How the engine client's low-level failures reach the rest of the gateway: one table.

gateway/httpclient.py raises the phase-marked errors below from its socket calls; ``InHttpxTerms``
drops the connection and re-raises each as the httpx exception the routing code handles, and
``failure_kind`` names it for metrics and the client's ``Tried:`` message.
"""

from __future__ import annotations

from collections.abc import Callable

import httptools
import httpx


def keep_nothing() -> None:
    """Nothing to drop: the failure came before there was a connection."""


class ConnectTimedOut(TimeoutError):
    pass


class ConnectFailed(OSError):
    pass


class SendTimedOut(TimeoutError):
    pass


class SendFailed(OSError):
    pass


class Stale(Exception):
    """A reused connection the backend had already closed: nothing was answered, send it anew."""


# The one translation of the engine client's low-level failures into the httpx exceptions the rest
# of the gateway handles, in the spirit of httpx's ``map_httpcore_exceptions``
# (httpx/_transports/default.py). The first matching row wins, so the most specific comes first:
# the phase-marked errors before the plain ``TimeoutError`` (a recv's) and ``OSError`` they derive from.
# ``FAILURE_KINDS`` names each outcome as ``upstream_failures``' reason and the ``Tried:`` text say it.
_TRANSLATIONS: tuple[tuple[type[BaseException], type[httpx.TransportError], str], ...] = (
    (ConnectTimedOut, httpx.ConnectTimeout, "connect timed out"),
    (SendTimedOut, httpx.WriteTimeout, "the engine did not take the request in time"),
    (TimeoutError, httpx.ReadTimeout, "the engine did not answer in time"),
    (ConnectFailed, httpx.ConnectError, "could not connect"),
    (SendFailed, httpx.WriteError, "sending the request failed"),
    (httptools.HttpParserError, httpx.RemoteProtocolError, "malformed response"),
    (OSError, httpx.ReadError, "reading the answer failed"),
)
FAILURE_KINDS: dict[type[httpx.TransportError], str] = {
    httpx.ConnectTimeout: "connect_timeout",
    httpx.ReadTimeout: "read_timeout",
    httpx.WriteTimeout: "write_timeout",
    httpx.ConnectError: "connect_error",
    httpx.ReadError: "read_error",
    httpx.WriteError: "write_error",
    httpx.RemoteProtocolError: "protocol_error",
}
TIMEOUT_KINDS = frozenset(("connect_timeout", "read_timeout", "write_timeout"))


def failure_kind(exc: httpx.TransportError) -> str:
    """The short name of an engine-client failure, for metrics and the client's error message."""
    return FAILURE_KINDS.get(type(exc), "timeout" if isinstance(exc, httpx.TimeoutException) else "transport_error")


class InHttpxTerms:
    """A failed exchange leaves the connection unusable: drop it, and raise the failure as the
    httpx exception ``_TRANSLATIONS`` gives. A class rather than ``@contextmanager``: it wraps every
    engine call twice, and a generator-based one costs several times as much to enter."""

    __slots__ = ("_drop", "_what")

    def __init__(self, drop: Callable[[], None], what: str) -> None:
        self._drop, self._what = drop, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, trace: object) -> None:
        if exc is None or isinstance(exc, Stale):
            return
        self._drop()
        if isinstance(exc, httpx.TransportError):
            return
        for low, high, phrase in _TRANSLATIONS:
            if isinstance(exc, low):
                raise high(f"{phrase} ({self._what}): {str(exc) or type(exc).__name__}") from exc
