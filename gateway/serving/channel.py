"""How waitress meets the gateway's clients: a response's head goes out with its body and straight
from the request thread, the loop thread is woken only when it has to be, heads of the usual shape
are parsed and written in one pass, streams keep their connection, and a connection can be read by
the request thread holding the turn as well as by the loop (gateway/serving/turnreads.py)."""

from __future__ import annotations

import contextlib
import json
import operator
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import waitress
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.rfc7230 import FIELD_VALUE, OWS, TOKEN
from waitress.task import ErrorTask, WSGITask
from waitress.utilities import build_http_date
from waitress.wasyncore import _DISCONNECTED

from gateway import turns
from gateway.serving.eventloop import HAVE_EPOLL, ChannelMap, EpollLoop, NoNotes

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# One header field, and a whole block of them, by waitress's own grammar (RFC 7230 section 3.2).
_FIELD = f"({TOKEN}):{OWS}({FIELD_VALUE}){OWS}\r\n"
_FIELD_RE = re.compile(_FIELD)
_FIELDS_RE = re.compile(f"(?:{_FIELD})*\r\n")


# Fields a request may carry once (RFC 9112 sections 3.2 and 6.3): waitress 3.0.2 joins repeats
# with ", " (a repeated Content-Length then fails its digits check; Host and Content-Type pass).
# waitress's main branch refuses all three repeated (Pylons/waitress#484, merged 2026-03-13, and #488,
# commit 120424f): the gateway does so now, on both of the parser's paths.
_SINGLETON_FIELDS = frozenset({"HOST", "CONTENT_LENGTH", "CONTENT_TYPE"})
_SINGLETON_LINE_RE = re.compile(r"^(host|content-length|content-type)[ \t]*:", re.IGNORECASE | re.MULTILINE)


class _OnePassParser(HTTPRequestParser):  # type: ignore[misc]  # waitress ships no types
    """waitress matches, strips, upper-cases and decodes each header line in its own steps, on the
    loop thread that every client shares. A block of plain fields (no folded lines, nothing its
    grammar rejects) is checked with one match and split with one ``findall`` here; anything else
    goes through waitress's parse unchanged, errors included. The request line, framing and
    connection handling stay waitress's: it parses the first line with these headers in place.

    Both paths then make two checks waitress 3.0.2 does not: a repeated Host, Content-Length or
    Content-Type is refused (as waitress's main branch does), and so is a Content-Length beside
    ``Transfer-Encoding: chunked`` (RFC 9112 section 6.1: "ought to be handled as an error"; waitress
    3.0.2 reads the chunks and keeps the connection, its main branch closes it after the answer,
    Pylons/waitress#464 and commit 99080a8; no OpenAI client sends both). Either is a 400 that
    closes the connection, before anything reaches the app."""

    def parse_header(self, header_plus: bytes) -> None:
        text = header_plus.decode("latin-1")
        fields_start = text.find("\r\n") + 2
        if fields_start < 2 or _FIELDS_RE.fullmatch(text, fields_start) is None:
            if fields_start >= 2:
                _refuse_repeated_singletons(text, fields_start)
            super().parse_header(header_plus)
        else:
            headers = self.headers
            for name, value in _FIELD_RE.findall(text, fields_start):
                if "_" in name:
                    continue  # as waitress does: such a name could pass for a dashed one in the environ
                key = name.upper().replace("-", "_")
                if key in headers:
                    if key in _SINGLETON_FIELDS:
                        raise ParsingError(f"Duplicate header: {name}")
                    headers[key] += ", " + value
                else:
                    headers[key] = value
            super().parse_header(header_plus[:fields_start])
        if self.chunked and "CONTENT_LENGTH" in self.headers:
            raise ParsingError("Content-Length with Transfer-Encoding: chunked")


def _refuse_repeated_singletons(text: str, fields_start: int) -> None:
    """The duplicate check for heads that take waitress's own path (folded lines, odd spacing)."""
    seen: set[str] = set()
    for name in _SINGLETON_LINE_RE.findall(text, fields_start):
        key = name.lower()
        if key in seen:
            raise ParsingError(f"Duplicate header: {name}")
        seen.add(key)


_HEADERS_WAITRESS_DECIDES_ON = frozenset({"Connection", "Date", "Server"})
_by_name = operator.itemgetter(0)
_header_names: dict[str, str] = {}  # the app's few header names, as waitress capitalises them
_date: tuple[int, str] = (-1, "")


def _header_name(name: str) -> str:
    known = _header_names.get(name)
    if known is None:
        known = "-".join([part.capitalize() for part in name.split("-")])
        if len(_header_names) < 256:
            _header_names[name] = known
    return known


def _http_date(when: float) -> str:
    global _date
    second = int(when)
    cached = _date
    if cached[0] != second:
        cached = _date = (second, build_http_date(when))
    return cached[1]


class _HeadWithBodyTask(WSGITask):  # type: ignore[misc]
    """waitress sends a response's head and its first body bytes with a send() each: two system
    calls and two TCP segments for every answer. This holds the head back for the bytes after it.

    It also writes the head of the usual answer (HTTP/1.1, kept alive, a body, no Date, Server or
    Connection from the app) without waitress's per-header splitting and capitalising and its
    per-answer date formatting; any other answer's head is waitress's own.

    An answer of unknown length (a stream) goes out chunked, as waitress sends it, but the
    connection stays open after its last chunk: waitress closes it, so an OpenAI client that
    streams one answer after another paid a new connection for each.
    """

    response_headers: list[tuple[str, str]]

    def build_response_header(self) -> bytes:
        if self.version != "1.1" or not self.has_body:
            return bytes(super().build_response_header())
        if self.request.headers.get("CONNECTION", "").lower() == "close":
            return bytes(super().build_response_header())
        headers = []
        length = None
        for name, value in self.response_headers:
            name = _header_name(name)
            if name in _HEADERS_WAITRESS_DECIDES_ON:
                return bytes(super().build_response_header())
            if name == "Content-Length":
                length = value
            headers.append((name, value))
        if length is None:
            # waitress counted a one-part body (it adds the length), or a HEAD answer: no chunks follow
            if self.content_length is not None or self.request.command == "HEAD":
                return bytes(super().build_response_header())
            headers.append(("Transfer-Encoding", "chunked"))
            self.chunked_response = True
        ident = self.channel.server.adj.ident
        if ident:
            headers.append(("Server", ident))
        headers.append(("Date", _http_date(self.start_time)))
        self.response_headers = headers
        # sorted by name as waitress does; stable, so same-named headers keep their order
        lines = "".join([f"{name}: {value}\r\n" for name, value in sorted(headers, key=_by_name)])
        return f"HTTP/1.1 {self.status}\r\n{lines}\r\n".encode("latin-1")

    def write(self, data: bytes) -> None:
        if self.wrote_header or not data:
            super().write(data)
            return
        channel = self.channel
        channel.hold_next_write = True
        try:
            super().write(data)
        finally:
            channel.release_held_write()  # the head alone, if no body followed it (HEAD, 204, 304)


_serving = threading.local()  # the channel whose request this thread is serving


class _OpenAIErrorTask(ErrorTask):  # type: ignore[misc]
    """waitress answers malformed HTTP and oversize bodies itself, before the app runs, in text/plain.
    The channel's ``error_task_class`` is waitress's seam for that page: every such 4xx has OpenAI's
    error shape, as the app's own do."""

    def execute(self) -> None:
        error = self.request.error
        kind = "invalid_request_error" if error.code < 500 else "api_error"
        message = f"{error.reason}: {error.body}" if error.body else error.reason
        body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class HeadWithBodyChannel(HTTPChannel):  # type: ignore[misc]
    """A response's head goes out with its body, and straight from the request thread; the loop
    thread is woken only when its select() has stopped watching for what the channel needs.

    waitress queues each write in the channel's out buffer and then sends it from the same thread.
    While the bytes sit there, the loop thread sees the channel writable: its select() returns at
    once, it cannot take the buffer's lock, and it polls again, spinning on the GIL and the core
    until the send returns (19 turns of its loop per request at c=8, against 2). With nothing queued
    before them, bytes are sent directly; only what the socket does not take is queued.

    waitress also wakes the loop thread after every request (a write to its trigger pipe, a read
    and a whole extra turn of the loop), so that its next select() watches the connection for the
    client's next request again. Served with ``channel_request_lookahead=1`` (see ``create_server``)
    a connection stays watched while its request runs, and the wake is skipped when the loop's
    pending select() already watches for what the channel needs. The loop notes what it asked
    for in ``readable()``/``writable()``; ``None`` while it is working it out, which counts as stale.
    """

    task_class = _HeadWithBodyTask
    error_task_class = _OpenAIErrorTask
    parser_class = _OnePassParser
    hold_next_write = False
    _held: bytes | None = None
    _loop_reads: bool | None = None
    _loop_writes: bool | None = None
    stepped_aside = False  # the loop's last readable() left it to the turn's holder
    timer_running = False  # the loop's last readable() found its header or idle timer running

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._read_lock = threading.Lock()
        super().__init__(*args, **kwargs)
        # Since when the client owes a request head: from its connection (nginx's client_header_timeout
        # counts so too) and from the first byte of each later head; None while it owes none.
        self._head_since: float | None = self.creation_time

    def readable(self) -> bool:
        self._loop_reads = None
        if self._head_since is not None or self.total_outbufs_len:
            self._close_if_stuck()
        reads = bool(super().readable())
        turn_reads = self.server.turn_reads
        # A request arriving in pieces stays the loop's to read: the turn's holder reads only
        # between requests, one piece each time, which would drag a large upload out under load.
        if reads and turn_reads is not None and self.request is None:
            reads = turn_reads.loop_reads()
            self.stepped_aside = not reads
            if not reads:
                self.server.loop_notes.left_to_turn(self)
        else:
            self.stepped_aside = False
        # For the epoll loop (eventloop.py): ask again on a timer, not only when something changes.
        self.timer_running = self._head_since is not None or bool(self.total_outbufs_len)
        self._loop_reads = reads
        return reads

    def handle_read(self) -> None:
        """waitress's read, made safe for two readers (gateway/serving/turnreads.py): one at a time, and
        nothing to read is no error. An end of input closes the connection on the loop thread."""
        with self._read_lock:
            try:
                data = self.socket.recv(self.adj.recv_bytes)
            except BlockingIOError:
                return  # the other reader had it
            except OSError as exc:
                if self.adj.log_socket_errors and exc.errno not in _DISCONNECTED:
                    self.logger.exception("Socket error")
                data = b""
            if not data:
                self.will_close = True  # the loop closes it: it may be selecting on this socket
                self.server.loop_notes.note(self)
                self.server.wake_loop()
                return
            self.last_activity = now = time.time()
            self.received(data)
            request = self.request
            if request is None or request.headers_finished:
                self._head_since = None
            elif self._head_since is None:
                self._head_since = now
            self.server.loop_notes.note(self)  # read by the turn's holder, perhaps: the loop asks again

    def _close_if_stuck(self) -> None:
        """Asked by the loop before each select(): a connection whose client has owed its request
        head for longer than the header timeout, or has taken none of a pending answer for longer
        than the idle timeout, is closed. waitress's own idle check (``channel_timeout``) skips
        connections with a request in service, and its loop would keep a dripped head forever; a
        writer blocked on the answer (see ``_flush_outbufs_below_high_watermark``) is freed by the
        close. Neither kind of client holds a request thread meanwhile."""
        now = time.time()
        since = self._head_since
        if since is not None and self.request is not None and self.request.headers_finished:
            since = self._head_since = None  # a head completed by a path that does not stamp
        if since is not None and not self.requests and now - since > self.server.header_timeout:
            # Not while a request is in service: a next head read ahead of a long stream waits for it.
            self.will_close = True  # the socket is writable: the loop's next write step closes it
        elif self.total_outbufs_len and now - self.last_activity > self.adj.channel_timeout:
            # Its socket is full, so the loop never gets to a write step that would close it; shut
            # down, the socket fails the next send and waitress closes it, waking the writer.
            self.will_close = True
            with contextlib.suppress(OSError):
                self.socket.shutdown(socket.SHUT_RDWR)

    def _flush_outbufs_below_high_watermark(self) -> None:
        """waitress makes a writer wait here while the client has more than ``outbuf_high_watermark``
        (16 MiB) of its answer unread. The wait gives the turn up (gateway/turns.py), so a client
        that stops reading stalls only its own request."""
        if self.total_outbufs_len > self.adj.outbuf_high_watermark:
            with turns.waiting():
                super()._flush_outbufs_below_high_watermark()

    def writable(self) -> bool:
        self._loop_writes = None
        writes = bool(super().writable())
        self._loop_writes = writes
        return writes

    def loop_is_watching(self) -> bool:
        """Whether the loop's pending select() already watches for everything this channel now
        needs. A note that says it watches holds for the select() it was taken for; a note being
        worked out counts as not watching. Reading is covered too while a thread holds the turn:
        it reads connections before it lets the turn go, and the loop is woken when it does; but
        not the rest of a request that arrived in part, which only the loop reads."""
        reads, writes = self._loop_reads, self._loop_writes
        if not (reads or not super().readable()):
            turn_reads = self.server.turn_reads
            reads = self.request is None and turn_reads is not None and turn_reads.turn_reads()
        return bool((reads or not super().readable()) and (writes or not super().writable()))

    def service(self) -> None:
        _serving.channel = self
        try:
            super().service()
        finally:
            _serving.channel = None

    def write_soon(self, data: bytes) -> int:
        if self.hold_next_write:
            self.hold_next_write = False
            self._held = data
            return len(data)
        if self._held is not None:
            data, self._held = self._held + data, None
        if data and self.connected and not self.total_outbufs_len:
            with self.outbuf_lock:
                sent = 0
                if not self.total_outbufs_len:
                    try:
                        sent = self.send(data, do_close=False)  # 0 when it would block or is gone
                    except OSError:
                        sent = 0  # waitress's own path below meets the error again and handles it
                if sent:
                    self.last_activity = time.time()
                    if sent == len(data):
                        return sent
                    data = data[sent:]
        return int(super().write_soon(data))

    def release_held_write(self) -> None:
        self.hold_next_write = False
        if self._held is not None:
            held, self._held = self._held, None
            self.write_soon(held)


def create_server(
    app: WSGIApp, *, host: str, port: int, threads: int, header_timeout: float = 10.0,
    use_epoll: bool = HAVE_EPOLL, **adjustments: Any
) -> Any:
    """waitress's server with ``HeadWithBodyChannel``: connections stay watched while their request
    runs, and a finished request wakes the loop thread only when its select() needs it. A client
    that owes a request head for ``header_timeout`` seconds is dropped (waitress has no such bound).
    With ``use_epoll`` (Linux), the loop thread runs on epoll (gateway/serving/eventloop.py)."""
    channels = ChannelMap() if use_epoll else None
    server: Any = waitress.create_server(
        app, map=channels, host=host, port=port, threads=threads, channel_request_lookahead=1, **adjustments
    )
    server.channel_class = HeadWithBodyChannel
    server.header_timeout = header_timeout
    server.turn_reads = None  # set by whoever serves requests in turns (gateway/serving/server.py)
    pull_trigger = server.wake_loop = server.pull_trigger
    if channels is not None:
        # waitress's test shim: run() calls its loop(); the server's own readable() still decides
        epoll_loop = server.asyncore = EpollLoop(channels)
        notes: EpollLoop | NoNotes = epoll_loop
        maintenance = server.maintenance

        def maintenance_then_ask_all(now: float) -> None:
            maintenance(now)  # may mark any idle connection to close
            notes.note_all()

        server.maintenance = maintenance_then_ask_all
    else:
        notes = NoNotes(server.active_channels)
    server.loop_notes = notes

    def pull_trigger_if_needed() -> None:
        channel = getattr(_serving, "channel", None)
        if channel is None:
            notes.note_all()
            pull_trigger()
        elif not channel.loop_is_watching():
            notes.note(channel)
            pull_trigger()
        else:
            notes.note_aside(channel)  # the turn's holder may read it; the loop looks next turn

    server.pull_trigger = pull_trigger_if_needed
    return server
