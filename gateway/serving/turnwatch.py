"""A watchdog for turns held too long (gateway/turns.py), as asyncio's debug mode warns of a slow
callback (``loop.slow_callback_duration``, 0.1 s): a request thread that blocks while holding its
turn (a call that waits outside ``turns.waiting()``) stalls every other request, and is logged here
with its stack, so that it is found in the field and not by a user.

The request path pays nothing for it but two attribute stores per turn taken and an addition per
request (``Turns.holder``/``next_stretch``): the watchdog is a thread of its own that looks, a few
times per threshold, at who holds the turn and whether the stretch has moved since it last looked.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback

from gateway.turns import Turns

log = logging.getLogger("vilms.turns")

SLOW_TURN_SECONDS = 0.1  # asyncio's slow_callback_duration


class SlowTurnWatch:
    """Logs a warning with the holder's stack when one stretch of a turn lasts over ``threshold``."""

    def __init__(self, turns: Turns, threshold: float = SLOW_TURN_SECONDS, looks_per_threshold: int = 4) -> None:
        self._turns = turns
        self.threshold = threshold
        self._interval = threshold / looks_per_threshold
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="vilms-turn-watch", daemon=True)
        self.reported = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(5)

    def _watch(self) -> None:
        seen: tuple[int | None, int] = (None, -1)
        seen_since = 0.0
        reported_stretch = -1
        while not self._stopped.wait(self._interval):
            holder = self._turns.holder
            now = time.monotonic()
            if holder != seen:
                seen, seen_since = holder, now
                continue
            ident, stretch = holder
            # Seen since the look that first found it: held at least this long, at most one look more.
            if ident is not None and stretch != reported_stretch and now - seen_since >= self.threshold:
                reported_stretch = stretch
                self._report(ident, now - seen_since)

    def _report(self, ident: int, held: float) -> None:
        frame = sys._current_frames().get(ident)
        if frame is None:
            return  # gone meanwhile
        stack = "".join(traceback.format_stack(frame))
        self.reported += 1
        log.warning(
            "a request thread has held its turn for %.3f s without giving it up: every other request waits "
            "meanwhile. A call that blocks must run inside turns.waiting(). Its stack:\n%s", held, stack)
