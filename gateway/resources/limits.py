"""A cap on requests doing upstream work at once, with a bounded first-come-first-served queue for
the requests that find every slot taken, so a crowd waits its turn instead of being refused."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gateway import turns
from gateway.errors import MethodNotAllowed, ServerBusy


@dataclass(frozen=True)
class RequestBudget:
    """What one API request may use: a body size and a time from its start to its deadline."""

    max_body_bytes: int
    deadline_seconds: float
    clock: Callable[[], float]

    def deadline(self) -> float:
        return self.clock() + self.deadline_seconds


def _ignore_wait(seconds: float, outcome: str) -> None:
    return None


class InflightLimiter:
    """A count of free slots under one lock, and a queue of waiters behind it.

    Not ``threading.BoundedSemaphore``: that one is written in Python around a condition, and every
    request paid its acquire and its release-with-notify (1.8 to 2.3 us on this host, against 0.7
    here): a request that finds a slot takes the lock once each way. A request that finds none
    queues a baton (a locked lock) and waits on it without its turn; ``release`` hands its slot
    straight to the oldest baton, so a slot is never taken by a newcomer ahead of the queue and
    waiters leave in the order they came. The queue is bounded: a request that finds it full, or
    whose wait runs out, is refused with 429 and ``Retry-After``. Queued requests each hold a
    request thread while they wait: the thread count is sized for them (``ServiceSettings``)."""

    def __init__(
        self,
        limit: int,
        *,
        queue_size: int = 0,
        queue_timeout: float = 0.0,
        on_wait: Callable[[float, str], None] = _ignore_wait,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.queue_size = queue_size
        self.queue_timeout = queue_timeout
        self._on_wait = on_wait  # (seconds waited, "served" | "timeout" | "full")
        self._clock = clock
        self._free = limit
        self._queue: deque[threading.Lock] = deque()
        self._lock = threading.Lock()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def acquire(self) -> None:
        with self._lock:
            if self._free and not self._queue:
                self._free -= 1
                return
            if len(self._queue) >= self.queue_size:
                full = True
            else:
                full = False
                baton = threading.Lock()
                baton.acquire()
                self._queue.append(baton)
        if full:
            self._on_wait(0.0, "full")
            raise ServerBusy(
                f"All {self.limit} request slots are busy and {self.queue_size} requests are already "
                "waiting; retry shortly.", headers={"Retry-After": "1"})
        started = self._clock()
        with turns.waiting():
            served = baton.acquire(timeout=self.queue_timeout)
        if not served:
            with self._lock:
                try:
                    self._queue.remove(baton)
                except ValueError:
                    served = True  # a release handed this baton its slot as the wait ran out
        waited = self._clock() - started
        self._on_wait(waited, "served" if served else "timeout")
        if not served:
            raise ServerBusy(
                f"All {self.limit} request slots stayed busy for {self.queue_timeout:g} s; retry shortly.",
                headers={"Retry-After": "1"})

    def release(self) -> None:
        with self._lock:
            if self._queue:
                self._queue.popleft().release()  # the slot passes to the oldest waiter
                return
            if self._free >= self.limit:
                raise ValueError("InflightLimiter released more often than acquired")
            self._free += 1


def post_only(path: str) -> MethodNotAllowed:
    # The old gateway answered a GET here with a hint; clients that probe with GET still get one.
    return MethodNotAllowed(
        f"Method Not Allowed. Use POST {path} with a JSON body.", headers={"Allow": "POST"}
    )
