"""Serving the app with waitress, with a graceful drain on SIGTERM (what ``systemctl restart`` sends):
stop accepting, let in-flight requests finish, then exit."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from waitress.task import ThreadedTaskDispatcher

from gateway.app import Gateway
from gateway.serving.channel import WSGIApp, create_server
from gateway.serving.idlethreads import LastIdleFirst
from gateway.serving.turnreads import TurnReads
from gateway.serving.turnwatch import SlowTurnWatch
from gateway.turns import Turns

log = logging.getLogger("vilms.server")


class InflightTracker:
    """Counts requests from the call until the server closes their body (streams included)."""

    def __init__(self, app: WSGIApp) -> None:
        self._app = app
        self._lock = threading.Lock()
        self.count = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with self._lock:
            self.count += 1
        try:
            body = self._app(environ, start_response)
        except BaseException:
            self._done()
            raise
        return _Closing(body, self._done)

    def _done(self) -> None:
        with self._lock:
            self.count -= 1


class _Closing:
    __slots__ = ("_body", "_on_close")

    def __init__(self, body: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._body = body
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            closer = getattr(self._body, "close", None)
            if closer is not None:
                closer()
        finally:
            self._on_close()


_THREADS_PER_START = 32


class TurnTakingDispatcher(ThreadedTaskDispatcher):  # type: ignore[misc]  # waitress ships no types
    """waitress's thread pool, serving requests in turns (gateway/turns.py).

    The thread holding the turn serves queued requests one after another, so a busy gateway on
    one core works like a single worker thread: requests in arrival order, no hand-offs between
    threads. Another thread is woken only when a request arrives while no thread holds the turn,
    or when the holder gives its turn up to wait for a slow backend with requests still queued.
    Once its queue is empty, the holder reads what clients sent meanwhile and serves that before
    it lets the turn go (``read_between_turns``), so on a busy gateway the loop thread sleeps.
    """

    def __init__(self, threads: int) -> None:
        super().__init__()
        # waitress's own wakes the longest-idle thread; see gateway/serving/idlethreads.py
        self.queue_cv = LastIdleFirst(self.lock)
        self.turns = Turns(on_free=self._on_turn_free)
        self.reads: TurnReads | None = None  # set with the server it serves: see serve_in_turns
        self._channels: dict[int, Any] = {}
        self._stopping = False
        # A thousand threads take a third of a second to start (0.35 s for 1,296 on this host), which
        # would be a third of the start-up target: the first batch starts now, the rest beside the
        # running server, a batch per hold of the pool's lock so requests are not held up meanwhile.
        self.set_thread_count(min(threads, _THREADS_PER_START))
        if threads > _THREADS_PER_START:
            threading.Thread(target=self._start_the_rest, args=(threads,), name="vilms-thread-start",
                             daemon=True).start()

    def _start_the_rest(self, threads: int) -> None:
        for count in range(2 * _THREADS_PER_START, threads + _THREADS_PER_START, _THREADS_PER_START):
            with self.lock:
                if self._stopping:
                    break
            self.set_thread_count(min(count, threads))
        with self.lock:
            stopping = self._stopping
        # Shut down between a check and the start after it: stop what that start added (waitress's
        # shutdown has already asked the threads it knew of to stop, not these).
        if stopping:
            self.set_thread_count(0)

    def shutdown(self, cancel_pending: bool = True, timeout: float = 5) -> bool:
        with self.lock:
            self._stopping = True
        return bool(super().shutdown(cancel_pending, timeout))

    def read_between_turns(self, server: Any) -> None:
        """The turn's holder reads ``server``'s connections between requests (gateway/serving/turnreads.py)."""
        self.reads = server.turn_reads = TurnReads(self.turns, server.wake_loop)
        # epoll: the connections the loop left to the turn's holder; poll(): all of them
        self._channels = server.loop_notes.aside

    def add_task(self, task: Any) -> None:
        with self.lock:
            self.queue.append(task)
            if not self.turns.taken:
                self.queue_cv.notify()

    def _on_turn_free(self) -> None:
        with self.lock:
            if self.queue:
                self.queue_cv.notify()
                return
        if self.reads is not None:
            self.reads.turn_freed()

    def handler_thread(self, thread_no: int) -> None:
        while True:
            with self.lock:
                while not self.queue and self.stop_count == 0:
                    self.active_count -= 1
                    self.queue_cv.wait()
                    self.active_count += 1
                if self.stop_count > 0:
                    self.active_count -= 1
                    self.stop_count -= 1
                    self.threads.discard(thread_no)
                    self.thread_exit_cv.notify()
                    return
            self.turns.run(self._serve_queued)

    def _serve_queued(self) -> None:
        while not self.turns.resuming:  # a request back from its wait finishes before new ones start
            with self.lock:
                task = self.queue.popleft() if self.queue else None
            if task is None:
                # What clients sent while this thread served, read here rather than by the loop.
                if self.reads is None or not self.reads.read_sent(self._channels):
                    return
                continue
            self.turns.next_stretch()  # a new request: the turn watch times each on its own
            try:
                task.service()
            except BaseException:
                self.logger.exception("Exception when servicing %r", task)


def serve_in_turns(app: WSGIApp, *, host: str, port: int, threads: int, **adjustments: Any) -> Any:
    """``create_server``'s server with its requests served in turns by ``TurnTakingDispatcher``,
    whose turn holder also reads the connections between requests."""
    dispatcher = TurnTakingDispatcher(threads)
    # waitress's documented test shim is its only way to supply the thread pool.
    server = create_server(app, host=host, port=port, threads=threads, _dispatcher=dispatcher, **adjustments)
    dispatcher.read_between_turns(server)
    return server


# Request threads mostly wait (on an engine, a slot, a slow client): 512 KiB of stack each instead
# of glibc's 8 MiB keeps 1,300 of them at about 650 MiB of address space, not 10 GiB, which matters
# on an 8 GB board with strict overcommit; what they touch (about 16 KiB each) is the same.
THREAD_STACK_BYTES = 512 * 1024
# Descriptors beside the client connections: one engine connection per request slot, the listening
# socket, the loop's trigger pipe, log files, the embedding model's files.
_SPARE_DESCRIPTORS = 64


def serve(gateway: Gateway, *, host: str, port: int) -> None:
    service = gateway.config.service
    threads = service.request_threads
    _raise_descriptor_limit(service.connection_limit + service.inflight_limit + _SPARE_DESCRIPTORS)
    threading.stack_size(THREAD_STACK_BYTES)
    tracker = InflightTracker(gateway.app)
    server = serve_in_turns(
        tracker,
        host=host,
        port=port,
        threads=threads,
        connection_limit=service.connection_limit,
        # Bodies announced too big get our 413 via Content-Length; waitress cuts chunked ones.
        max_request_body_size=service.max_body_bytes + 1,
        # Where epoll is missing (create_server uses it on Linux): select() fails on a descriptor
        # past 1,023 (FD_SETSIZE); poll() has no such bound.
        asyncore_use_poll=True,
        channel_timeout=max(1, round(service.idle_timeout)),
        # How often waitress looks for idle connections; the header timeout is checked every loop.
        cleanup_interval=max(1, round(service.idle_timeout / 4)),
        ident="vilms-gateway",
        clear_untrusted_proxy_headers=True,
        header_timeout=service.header_timeout,
    )
    watch = SlowTurnWatch(server.task_dispatcher.turns)
    watch.start()
    gateway.start()
    # What start-up built lives as long as the process: out of the collector's sight, a full
    # collection under load takes about a millisecond instead of tens.
    gc.collect()
    gc.freeze()
    draining = threading.Event()

    def on_term(signum: int, frame: Any) -> None:
        if draining.is_set():
            return
        draining.set()
        log.info("SIGTERM: no new connections; draining %d in-flight request(s)", tracker.count)
        server.del_channel()
        # shutdown, not close: the poll loop may still hold this fd in its current select() call.
        with contextlib.suppress(OSError):
            server.socket.shutdown(socket.SHUT_RDWR)
        threading.Thread(target=_drain, args=(server, tracker, service.drain_seconds), daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    # The drain ends the loop with a SIGINT to itself (below). A parent may have left SIGINT ignored
    # (a script's `vilms-gateway serve &` does), and then Python never raises KeyboardInterrupt:
    # the drain would finish and the process stay up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    log.info("vilms-gateway listening on http://%s:%s with %d threads (%d request slots, queue %d)",
             host, server.effective_port, threads, service.inflight_limit, service.queue_limit)
    try:
        server.run()
    finally:
        watch.stop()
        gateway.close()
        log.info("vilms-gateway stopped")


def _close_after_current(server: Any) -> int:
    """On the event-loop thread (via the trigger): answer what is queued with ``Connection: close``
    and close idle keep-alive connections. Returns the client connections still open."""
    open_channels = 0
    server.loop_notes.note_all()
    for channel in list(server.active_channels.values()):
        open_channels += 1
        with channel.requests_lock:
            if channel.requests:
                for request in channel.requests:  # waitress reads this when it writes the head
                    request.headers["CONNECTION"] = "close"
            elif channel.request is None and not channel.total_outbufs_len:
                channel.will_close = True
    return open_channels


def _drain(server: Any, tracker: InflightTracker, limit: float) -> None:
    # OpenAI clients keep connections alive, and waitress keeps serving requests that arrive on open
    # connections: without closing them the drain would never end under steady load.
    deadline = time.monotonic() + limit
    state = {"open": 1}

    def mark() -> None:
        state["open"] = _close_after_current(server)

    while time.monotonic() < deadline:
        server.trigger.pull_trigger(mark)
        time.sleep(0.05)
        if tracker.count == 0 and state["open"] == 0:
            break
    else:
        log.warning("drain limit of %.0f s reached with %d request(s) in flight", limit, tracker.count)
    # waitress leaves its loop cleanly on KeyboardInterrupt; SIGINT delivers one to the main thread.
    os.kill(os.getpid(), signal.SIGINT)


def _raise_descriptor_limit(needed: int) -> None:
    """Lift the soft descriptor limit to the hard one (systemd's default soft limit is 1,024, its hard
    limit far higher; the unit sets both), and say so when even that is short of the connection limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning("open files limited to %d, below the %d that gateway.connection-limit and the request slots "
                    "need: raise LimitNOFILE or lower gateway.connection-limit", soft, needed)
