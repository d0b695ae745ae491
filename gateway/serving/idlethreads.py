"""Which idle request thread takes the next request: the one that went idle last.

waitress parks idle threads on a ``threading.Condition``, whose ``notify()`` wakes the thread that
has waited longest (CPython keeps its waiters in a FIFO deque). With the crowd-sized pool (1,296
threads at the defaults), steady traffic at a handful of clients then cycles through every thread,
and each one touches the pages of stack a request needs: the pool's whole stack area stays
resident. Waking the thread that went idle last keeps the threads in use, and the memory they
touch, as few as the traffic needs; the rest stay parked with the few pages they touched at start.
Kept for what ``bench.ab`` measured: 35% less resident memory under chat load (99 -> 64 MB), CPU
unchanged within the rounds' spread (bench/RESULTS.md, 2026-12-07, later: "idle request threads").
"""

from __future__ import annotations

import threading
from typing import Any


class LastIdleFirst:
    """A condition variable on ``lock`` with the calls waitress's pool makes on its ``queue_cv``
    (``wait`` without a timeout, ``notify``, ``notify_all``; the caller holds ``lock`` for each),
    whose ``notify()`` wakes the thread that began waiting last."""

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self._waiters: list[Any] = []  # one held lock per parked thread, the newest last

    def wait(self) -> None:
        waiter = threading.Lock()
        waiter.acquire()
        self._waiters.append(waiter)
        self._lock.release()
        try:
            waiter.acquire()  # released by notify(), which has taken it off the list
        finally:
            self._lock.acquire()

    def notify(self, n: int = 1) -> None:
        waiters = self._waiters
        for _ in range(min(n, len(waiters))):
            waiters.pop().release()

    def notify_all(self) -> None:
        self.notify(len(self._waiters))

    @property
    def waiting(self) -> int:
        """Threads parked now (read with ``lock`` held)."""
        return len(self._waiters)
