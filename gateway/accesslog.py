"""The access log: one JSON line per request, written straight to a text stream (stdout when served).

Why not a ``logging`` logger: every line is a request's, so the level, filter and handler
machinery decides nothing, yet building a ``LogRecord`` and passing it through a handler and a
formatter cost about 9 us per request on this hot path (bench/RESULTS.md), against under 2 us for
a write under a lock. Error and warning messages still go through ``logging``, to stderr.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, TextIO

from gateway import wirejson

log = logging.getLogger("vilms.gateway")


class AccessLog:
    """Writes whole lines, one request's at a time, and flushes each so journald sees it at once.

    A line that cannot be written is dropped: a closed or broken stdout must not fail the request
    it describes. The first failure of a run of them is reported once, on stderr."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._failing = False

    def write(self, entry: dict[str, Any]) -> None:
        line = wirejson.dumps(entry).decode() + "\n"
        with self._lock:
            try:
                self._stream.write(line)
                self._stream.flush()
            except (OSError, ValueError) as exc:  # ValueError: the stream was closed
                if not self._failing:
                    self._failing = True
                    log.warning("access log lines are being dropped: cannot write to %s (%s)",
                                _name(self._stream), exc)
            else:
                self._failing = False


def _name(stream: TextIO) -> str:
    return str(getattr(stream, "name", type(stream).__name__))
