"""The loop thread on epoll: each connection is registered once and its registration changed only
when what it waits for may have changed, instead of waitress's ``poll()`` loop (``wasyncore.poll2``),
which asks every channel ``readable()``/``writable()`` and registers all of them in a new poll object
on every turn. With 2,000 idle keep-alive clients that was 2,000 questions and registrations per
turn, and the loop turns at least once per request. Kept for what ``bench.ab --idle 2000`` measured:
CPU per request 47 to 88% lower beside 2,000 idle clients (bench/RESULTS.md, 2026-12-07, later:
"the loop thread on epoll").

A channel's answer is asked again (and its registration changed if it differs) when:

- the loop handled an event on it, or it joined or left the map (``ChannelMap`` notes both);
- a request thread changed it and woke the loop or chose not to (``note``: channel.py's trigger);
- the loop stepped aside from reading it for the turn's holder (``aside``, asked every turn: the
  clients of the moment, not the idle crowd; gateway/serving/turnreads.py reads them meanwhile);
- it owes a request head or holds an unsent answer (its header or idle timeout is checked in
  ``readable()``): every ``_TIMED_RECHECK`` seconds, not every turn;
- waitress's maintenance or the drain may have changed any of them (``note_all``).

Where ``select.epoll`` is missing (not Linux), waitress's own loop runs as before.
"""

from __future__ import annotations

import contextlib
import select
import time
from typing import Any

from waitress import wasyncore

HAVE_EPOLL = hasattr(select, "epoll")
_TIMED_RECHECK = 0.25  # seconds between looks at connections whose header or idle timer runs
# epoll's bits are poll()'s (both are the kernel's POLL* values), so waitress's readwrite() reads them.
_READ = select.POLLIN | select.POLLPRI
_WRITE = select.POLLOUT


class ChannelMap(dict[int, Any]):
    """waitress's socket map (descriptor -> dispatcher) noting every descriptor added or removed:
    wasyncore's ``add_channel``/``del_channel`` set and delete its items."""

    def __init__(self) -> None:
        super().__init__()
        self.changed: set[int] = set()
        self.changed_all = False

    def __setitem__(self, fd: int, obj: Any) -> None:
        super().__setitem__(fd, obj)
        self.changed.add(fd)

    def __delitem__(self, fd: int) -> None:
        super().__delitem__(fd)
        self.changed.add(fd)

    def pop(self, fd: int, *default: Any) -> Any:
        self.changed.add(fd)
        return super().pop(fd, *default)

    def clear(self) -> None:
        self.changed_all = True
        super().clear()


class EpollLoop:
    """Stands in for ``wasyncore`` as the server's ``asyncore`` (waitress's test shim, read by
    ``run()`` for ``loop``). Counts every question and registration change, for the tests."""

    dispatcher = wasyncore.dispatcher

    def __init__(self, channels: ChannelMap) -> None:
        self.channels = channels
        self.aside: dict[int, Any] = {}  # connections the loop leaves to the turn's holder for now
        self._timed: dict[int, Any] = {}
        self._registered: dict[int, tuple[Any, int]] = {}
        self._epoll: Any = None
        self._next_timed = 0.0
        self._listeners: set[int] = set()
        self.asked = 0
        self.registrations_changed = 0

    def note(self, channel: Any) -> None:
        """``channel`` may want something else now (any thread); the loop asks it on its next turn.
        The caller wakes the loop if it must act at once."""
        fd = channel._fileno
        if fd is not None:
            self.channels.changed.add(fd)

    def note_aside(self, channel: Any) -> None:
        """A request ended on ``channel`` while the turn's holder reads for the loop: the holder
        reads it meanwhile, and the loop asks it again every turn until it watches it itself."""
        fd = channel._fileno
        if fd is not None:
            self.aside[fd] = channel
            self.channels.changed.add(fd)

    def note_all(self) -> None:
        self.channels.changed_all = True

    def left_to_turn(self, channel: Any) -> None:
        """The loop's ``readable()`` left ``channel`` to the turn's holder (any caller)."""
        fd = channel._fileno
        if fd is not None:
            self.aside[fd] = channel

    def loop(self, timeout: float = 30.0, use_poll: bool = False, map: Any = None, count: Any = None) -> None:
        """wasyncore.loop's signature; ``map`` is the server's ``ChannelMap``, ``count`` unused."""
        self._epoll = select.epoll()
        # waitress's server runs its maintenance and connection limit from readable(): every turn.
        self._listeners = {fd for fd, obj in self.channels.items() if getattr(obj, "accepting", False)}
        self.note_all()
        try:
            while self.channels:
                self.turn(timeout)
        finally:
            self._epoll.close()
            self._registered.clear()

    def turn(self, timeout: float) -> None:
        channels = self.channels
        to_ask: set[int] = set()
        if channels.changed_all:
            channels.changed_all = False
            to_ask.update(channels)
            to_ask.update(self._registered)
        changed = channels.changed
        while changed:
            to_ask.add(changed.pop())  # atomic: a note added meanwhile is taken now or on the next turn
        to_ask.update(self.aside)
        to_ask.update(self._listeners)
        now = time.monotonic()
        if self._timed and now >= self._next_timed:
            to_ask.update(self._timed)
            self._next_timed = now + _TIMED_RECHECK
        for fd in to_ask:
            self._ask(fd)
        wait = min(timeout, _TIMED_RECHECK) if self._timed else timeout
        try:
            events = self._epoll.poll(wait)
        except InterruptedError:
            events = []
        for fd, flags in events:
            if fd not in channels:
                continue
            # Handled only for what it still waits for, as poll2 would have registered it.
            wanted = self._ask(fd) | select.POLLHUP | select.POLLERR
            obj = channels.get(fd)
            if obj is not None and flags & wanted:
                wasyncore.readwrite(obj, flags & wanted)
            changed.add(fd)  # asked again on the next turn, after what the handler changed

    def _ask(self, fd: int) -> int:
        """Ask the channel on ``fd`` what it waits for and register exactly that."""
        obj = self.channels.get(fd)
        old = self._registered.get(fd)
        if old is not None and old[0] is not obj:  # gone, or the descriptor's number reused
            self._forget(fd)
            old = None
        if obj is None:
            self.aside.pop(fd, None)
            return 0
        self.asked += 1
        flags = (_READ if obj.readable() else 0) | (_WRITE if obj.writable() and not obj.accepting else 0)
        if not flags & _READ and getattr(obj, "stepped_aside", False):
            self.aside[fd] = obj
        else:
            self.aside.pop(fd, None)
        if getattr(obj, "timer_running", False):
            self._timed[fd] = obj
        else:
            self._timed.pop(fd, None)
        if old is not None and old[1] == flags:
            return flags
        self.registrations_changed += 1
        try:
            if not flags:
                if old is not None and old[1]:
                    self._epoll.unregister(fd)  # unwatched, as poll2 leaves it out: no hang-up reported
            elif old is None or not old[1]:
                self._epoll.register(fd, flags)
            else:
                try:
                    self._epoll.modify(fd, flags)
                except FileNotFoundError:  # dropped by the kernel, though the map still has it
                    self._epoll.register(fd, flags)
        except OSError:
            # The socket closed under the loop (its map entry goes next), and the kernel dropped it.
            self._registered.pop(fd, None)
            return 0
        self._registered[fd] = (obj, flags)
        return flags

    def _forget(self, fd: int) -> None:
        entry = self._registered.pop(fd, None)
        self._timed.pop(fd, None)
        self.aside.pop(fd, None)
        if entry is not None and entry[1]:
            with contextlib.suppress(OSError):  # the kernel dropped it when the socket closed
                self._epoll.unregister(fd)


class NoNotes:
    """What the channels tell the loop, where waitress's own loop runs: it asks every channel on
    every turn, so it needs no notes, and the turn's holder reads among all connections."""

    def __init__(self, channels: dict[int, Any]) -> None:
        self.aside = channels

    def note(self, channel: Any) -> None:
        pass

    def note_aside(self, channel: Any) -> None:
        pass

    def note_all(self) -> None:
        pass

    def left_to_turn(self, channel: Any) -> None:
        pass
