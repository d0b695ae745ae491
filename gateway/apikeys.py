"""The Bearer keys the gateway accepts: ``gateway.api-keys`` plus the lines of ``gateway.api-key-file``.

The file is read again when it changes (checked at most once a second), so a key can be rotated with
no restart and no dropped request: add the new key, move the clients over, remove the old key. A file
that becomes unreadable or empty never opens the gateway: the keys read before stay in force.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from gateway.config import ServiceSettings

log = logging.getLogger("vilms.gateway")

CHECK_INTERVAL = 1.0


class ApiKeys:
    def __init__(self, service: ServiceSettings, *, clock: Callable[[], float] = time.monotonic,
                 check_interval: float = CHECK_INTERVAL) -> None:
        self._inline = tuple(key.encode() for key in service.api_keys)
        self._path = service.api_key_file
        self._clock = clock
        self._interval = check_interval
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int, int] | None = None
        self._next_check = clock() + check_interval
        self._keys = self._inline
        if self._path:
            # At start an unreadable file is an error the operator must see (cli.py reports the OSError).
            self._stamp = _stamp(self._path)
            self._keys = self._inline + _read(self._path)

    @property
    def enabled(self) -> bool:
        """Whether a key is required; fixed at start, so a file change can never turn auth off."""
        return bool(self._inline) or self._path is not None

    def current(self) -> tuple[bytes, ...]:
        if self._path is not None and self._clock() >= self._next_check:
            with self._lock:
                if self._clock() >= self._next_check:
                    self._next_check = self._clock() + self._interval
                    self._reload(self._path)
        return self._keys

    def _reload(self, path: str) -> None:
        try:
            stamp = _stamp(path)
            if stamp == self._stamp:
                return
            keys = _read(path)
        except OSError as exc:
            log.error("cannot read the API key file %s (%s): the keys read before stay in force", path,
                      exc.strerror or exc)
            return
        self._stamp = stamp
        if not keys and not self._inline:
            log.error("the API key file %s holds no key: the keys read before stay in force", path)
            return
        self._keys = self._inline + keys
        log.info("API keys reloaded from %s: %d key(s)", path, len(self._keys))


def _stamp(path: str) -> tuple[int, int, int, int]:
    # Ansible replaces the file by renaming a new one over it: the inode changes even when size and
    # mtime (to the second on some file systems) do not.
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _read(path: str) -> tuple[bytes, ...]:
    with open(path, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle]
    return tuple(line.encode() for line in lines if line and not line.startswith("#"))
