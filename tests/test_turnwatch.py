"""A turn held too long without being given up (a blocking call slipped in outside
``turns.waiting()``) is logged with the holder's stack, as asyncio's debug mode logs a slow
callback; a thread that waits as it should, or serves many quick requests in one turn, is not."""

from __future__ import annotations

import logging
import threading
import time

from gateway import turns
from gateway.serving.turnwatch import SlowTurnWatch
from gateway.turns import Turns


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.logged = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.logged.set()


def _watched(turn: Turns, threshold: float) -> tuple[SlowTurnWatch, _Warnings]:
    warnings = _Warnings()
    logging.getLogger("vilms.turns").addHandler(warnings)
    watch = SlowTurnWatch(turn, threshold=threshold)
    watch.start()
    return watch, warnings


def _unwatch(watch: SlowTurnWatch, warnings: _Warnings) -> None:
    watch.stop()
    logging.getLogger("vilms.turns").removeHandler(warnings)


def _blocks_holding_the_turn(release: threading.Event) -> None:
    release.wait(30)  # a blocking call that does not give the turn up


def test_a_turn_held_by_a_blocking_call_is_logged_with_the_holders_stack() -> None:
    turn = Turns()
    watch, warnings = _watched(turn, threshold=0.1)
    release = threading.Event()
    holder = threading.Thread(target=turn.run, args=(lambda: _blocks_holding_the_turn(release),))
    try:
        holder.start()
        assert warnings.logged.wait(10), "a turn held by a blocking call was not reported"
    finally:
        release.set()
        holder.join(10)
        _unwatch(watch, warnings)
    assert len(warnings.messages) == 1  # once per stretch, not once per look
    message = warnings.messages[0]
    assert "held its turn" in message and "_blocks_holding_the_turn" in message and "release.wait" in message


def test_a_thread_that_waits_without_its_turn_is_not_reported() -> None:
    turn = Turns()
    watch, warnings = _watched(turn, threshold=0.1)
    done = threading.Event()

    def waits_properly() -> None:
        with turns.waiting():
            done.wait(0.6)  # six thresholds, but the turn is free meanwhile

    try:
        turn.run(waits_properly)
    finally:
        _unwatch(watch, warnings)
    assert warnings.messages == []


def test_many_quick_requests_in_one_held_turn_are_not_reported() -> None:
    turn = Turns()
    watch, warnings = _watched(turn, threshold=0.3)

    def serve_queued() -> None:  # as TurnTakingDispatcher serves a queue in one turn
        started = time.monotonic()
        while time.monotonic() - started < 1.5:  # five thresholds in all
            turn.next_stretch()
            time.sleep(0.001)  # one quick request

    try:
        turn.run(serve_queued)
    finally:
        _unwatch(watch, warnings)
    assert warnings.messages == []
