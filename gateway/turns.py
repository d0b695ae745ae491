"""Request threads take turns at the interpreter, in arrival order.

Why: CPython hands the GIL to whichever waiting thread the OS wakes first, not to the one that
has waited longest. With a dozen waitress threads on one busy core, a request can lose that race
again and again: at 8 concurrent requests the median was 2 ms and p99 8 ms, while the same load
through a single worker thread, served strictly in order, had a 3 ms p99 at the same throughput
(bench/RESULTS.md). Turns give that order back without giving up the threads slow engines need.

A request thread holds its turn while it runs Python and gives it up, through ``waiting()``,
around anything that blocks: engine I/O (see ``httpclient``), slot waits, image fetches, model
inference. A thread coming back from a wait goes ahead of requests that have not started, so
work already begun finishes first. Code that may block must wait inside ``waiting()``: a thread
that blocks holding its turn stalls every other request until it wakes.

``waiting()`` does nothing on a thread without a turn (the event loop, the prober, tests that
call the app directly), so the gateway runs unchanged where nothing hands out turns.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_local = threading.local()


class Turns:
    """A FIFO lock with direct hand-off: ``release`` passes the turn to the longest-waiting thread,
    so a thread that just let go cannot take it back ahead of the others. Threads resuming after
    a wait queue apart from new requests and go first."""

    def __init__(self, on_free: Callable[[], None] | None = None) -> None:
        self._on_free = on_free  # called when a release finds nobody waiting
        self._mutex = threading.Lock()
        self._taken = False
        # For a watchdog (gateway/serving/turnwatch.py): who holds the turn, and a count that moves
        # whenever a holder takes it or starts another request (``next_stretch``).
        self._holder: int | None = None
        self._stretch = 0
        self._resuming: deque[threading.Lock] = deque()
        self._starting: deque[threading.Lock] = deque()

    def acquire(self, *, resuming: bool = False) -> None:
        with self._mutex:
            if not self._taken:
                self._taken = True
                self._holder = threading.get_ident()
                self._stretch += 1
                _local.turns = self
                return
            baton = threading.Lock()
            baton.acquire()
            (self._resuming if resuming else self._starting).append(baton)
        baton.acquire()  # the releasing thread hands the turn over by releasing our baton
        self._holder = threading.get_ident()
        self._stretch += 1
        _local.turns = self

    def release(self) -> None:
        _local.turns = None
        self._holder = None
        with self._mutex:
            queue = self._resuming or self._starting
            if queue:
                queue.popleft().release()
                return
            self._taken = False
        if self._on_free is not None:
            self._on_free()

    @property
    def taken(self) -> bool:
        return self._taken

    @property
    def holder(self) -> tuple[int | None, int]:
        """The thread holding the turn (None when free) and the current stretch's number: a holder
        that keeps one stretch long runs Python without giving its turn up."""
        return self._holder, self._stretch

    def next_stretch(self) -> None:
        """The holder starts another piece of work (a request) without giving its turn up."""
        self._stretch += 1

    @property
    def queued(self) -> int:
        return len(self._resuming) + len(self._starting)

    @property
    def resuming(self) -> int:
        """Threads back from a wait, queued for a turn to finish their request."""
        return len(self._resuming)

    def run(self, task: Callable[[], Any]) -> Any:
        self.acquire()
        try:
            return task()
        finally:
            self.release()


def held() -> bool:
    """Whether this thread holds a turn (and so must give it up before it blocks)."""
    return getattr(_local, "turns", None) is not None


@contextmanager
def waiting() -> Iterator[None]:
    """Around a call that may block: let the next request run meanwhile, resume after."""
    turns: Turns | None = getattr(_local, "turns", None)
    if turns is None:
        yield
        return
    turns.release()
    try:
        yield
    finally:
        turns.acquire(resuming=True)
