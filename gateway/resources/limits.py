"""A cap on requests doing upstream work at once, so a worker thread is always free for /health."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from gateway import turns
from gateway.errors import MethodNotAllowed, ServerBusy

# A slot usually frees within a millisecond under load, so a request may wait this long for one
# rather than bounce with a 429. It must stay short: with every slot held by a wedged backend,
# /health queued behind such requests waits this long for each of them.
SLOT_WAIT_SECONDS = 0.05


@dataclass(frozen=True)
class RequestBudget:
    """What one API request may use: a body size and a time from its start to its deadline."""

    max_body_bytes: int
    deadline_seconds: float
    clock: Callable[[], float]

    def deadline(self) -> float:
        return self.clock() + self.deadline_seconds


class InflightLimiter:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    def acquire(self) -> None:
        if self._slots.acquire(blocking=False):
            return
        with turns.waiting():
            free = self._slots.acquire(timeout=SLOT_WAIT_SECONDS)
        if not free:
            raise ServerBusy(
                f"All {self.limit} request slots are busy; retry shortly.", headers={"Retry-After": "1"}
            )

    def release(self) -> None:
        self._slots.release()


def post_only(path: str) -> MethodNotAllowed:
    # The old gateway answered a GET here with a hint; clients that probe with GET still get one.
    return MethodNotAllowed(
        f"Method Not Allowed. Use POST {path} with a JSON body.", headers={"Allow": "POST"}
    )
