"""Who reads a connection's next request: waitress's loop thread, or the request thread holding
the turn (gateway/turns.py), between the requests it serves.

waitress's loop thread reads and parses every request and hands it to a request thread. On a busy
gateway that is one wake of the loop thread per request, and the GIL handed from thread to thread
and back: at 8 concurrent clients the loop thread took 27% of the gateway's CPU, nine tenths of it
outside Python, in waking and switching. A thread holding the turn is running anyway, so each time
it runs out of queued requests it reads what clients have sent meanwhile (a ``poll()`` that does
not wait) and serves that. While the turn is held, the loop thread leaves connections waiting for a
request to it and sleeps; it still accepts connections, flushes what a request thread could not
send and closes idle ones. When the turn falls free, the loop watches them again, woken for that
only if it had stepped aside. A request that arrives in pieces is left to the loop once its first
piece is in: the holder reads only between requests, one piece each time.

The loop's pending ``select()`` may have been set up before the turn was taken, so both threads may
see a connection readable at once: reads take the connection's read lock, and a read that finds
nothing (the other thread took it) is no error.
"""

from __future__ import annotations

import logging
import operator
import select
from collections.abc import Callable
from typing import Any

from waitress.channel import HTTPChannel

from gateway.turns import Turns

log = logging.getLogger("vilms.server")
_last_activity = operator.attrgetter("last_activity")
_READ_EVENTS = select.POLLIN | select.POLLPRI


class TurnReads:
    """Decides, for the loop, whether it reads idle connections, and reads them for the turn."""

    def __init__(self, turns: Turns, wake_loop: Callable[[], None]) -> None:
        self._turns = turns
        self._wake_loop = wake_loop
        self._wake_when_free = False

    def loop_reads(self) -> bool:
        """Asked by the loop thread, for a connection that can take a request, before it selects."""
        if self.turn_reads():
            return False
        self._wake_when_free = False
        return True

    def turn_reads(self) -> bool:
        """Whether the turn's holder reads connections for now; if so, the loop is woken when the
        turn falls free (asked by the loop as it steps aside, and by a request ending on a
        connection the loop does not watch, instead of waking it at once)."""
        # Noted before the turn is looked at: a release racing this check then finds the note and
        # wakes the loop, so the loop never sleeps while nobody reads.
        self._wake_when_free = True
        return self._turns.taken

    def turn_freed(self) -> None:
        """The turn fell free: the loop watches connections again, woken if it had left them."""
        if self._wake_when_free:
            self._wake_when_free = False
            self._wake_loop()

    def read_sent(self, channels: dict[int, Any]) -> bool:
        """Read, without waiting, every connection that has sent something and can take it (as
        the loop would: waitress's ``readable()`` decides), except the rest of a request that
        arrived in part, which the loop reads. Whether anything was read."""
        if not self._wake_when_free:
            # The loop watches every connection (it has not stepped aside since the turn was last
            # free): a client's next request wakes it as it would anyway. At one client at a time
            # this is every request, and the select() below would almost never find anything.
            return False
        waiting = [fd for fd, channel in list(channels.items())
                   if isinstance(channel, HTTPChannel) and channel.connected and channel.request is None
                   and HTTPChannel.readable(channel)]
        if not waiting:
            return False
        # poll(), not select(): select() refuses descriptors past 1,023, and a crowd has thousands.
        poller = select.poll()
        for fd in waiting:
            poller.register(fd, _READ_EVENTS)
        # A descriptor the loop closed meanwhile comes back as POLLNVAL: the loop reads it no more.
        ready = [fd for fd, events in poller.poll(0) if not events & select.POLLNVAL]
        # In the order the clients last had an answer: poll() gives them in descriptor order,
        # which would put the same clients last in every batch.
        found = [channel for channel in map(channels.get, ready) if channel is not None]
        if len(found) > 1:
            found.sort(key=_last_activity)
        partly_read = False
        for channel in found:
            try:
                channel.handle_read()
            except Exception:
                # On the loop thread waitress would log this and close the connection; closing
                # belongs to the loop, so it is asked to.
                log.exception("reading a request failed; closing the connection")
                channel.will_close = True
                channel.server.loop_notes.note(channel)
                self._wake_loop()
            else:
                partly_read = partly_read or channel.request is not None
        if partly_read:
            self._wake_loop()  # its next select() watches them for the rest
        return bool(found)
