"""The request thread holding the turn reads clients' next requests between the ones it serves
(gateway/serving/turnreads.py): the loop thread sleeps meanwhile, is woken when the turn falls free, and
no request ever sits unread until the loop's 1 s timeout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from gateway.serving.channel import HeadWithBodyChannel
from gateway.serving.server import serve_in_turns
from gateway.serving.turnreads import TurnReads
from gateway.turns import Turns
from tests.gateway_harness import LiveGateway, UnstartedServer, build, gateway_config
from tests.standins.fixtures import StandinServer

USER = [{"role": "user", "content": "hello"}]
GET_HELLO = b"GET /hello HTTP/1.1\r\nHost: gw\r\n\r\n"
POST_TEN = b"POST /hello HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\n"


def _hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


class _Wakes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def test_while_the_turn_is_held_the_loop_leaves_connections_to_it_and_is_woken_once_it_falls_free() -> None:
    turns, wakes = Turns(), _Wakes()
    reads = TurnReads(turns, wakes)
    turns.acquire()
    assert reads.loop_reads() is False
    turns.release()
    reads.turn_freed()
    assert wakes.count == 1
    assert reads.loop_reads() is True  # woken, it watches them again


def test_a_loop_that_kept_watching_is_not_woken_when_the_turn_falls_free() -> None:
    turns, wakes = Turns(), _Wakes()
    reads = TurnReads(turns, wakes)
    assert reads.loop_reads() is True
    turns.acquire()
    turns.release()
    reads.turn_freed()
    assert wakes.count == 0


class _Box(UnstartedServer):
    """An unstarted server served in turns, with one client connection over a socket pair."""

    def __init__(self) -> None:
        super().__init__(serve_in_turns(_hello, host="127.0.0.1", port=0, threads=1))
        self.dispatcher = self.server.task_dispatcher
        self.ours.setblocking(False)
        self.peer.settimeout(5)

    def close(self) -> None:
        self.dispatcher.shutdown(timeout=2)
        super().close()


@pytest.fixture
def box() -> Iterator[_Box]:
    made = _Box()
    yield made
    made.close()


def test_the_turn_holder_serves_what_a_client_sent_without_the_loop(box: _Box) -> None:
    box.dispatcher.turns.acquire()
    assert box.loop_turn() is False  # the loop steps aside and sleeps
    box.peer.sendall(GET_HELLO)
    box.dispatcher._serve_queued()  # what the holder does once its queue is empty
    assert box.peer.recv(4096).startswith(b"HTTP/1.1 200 OK")
    assert box.wakes[0] == 0
    box.dispatcher.turns.release()
    assert box.wakes[0] == 1  # the turn fell free: the loop watches the connection again
    assert box.loop_turn() is True


def test_the_turn_holder_leaves_connections_the_loop_watches_to_it(box: _Box) -> None:
    assert box.loop_turn() is True  # watching, before the turn was taken
    box.dispatcher.turns.acquire()
    box.peer.sendall(GET_HELLO)
    # One client at a time: its next request wakes the loop anyway; a read here would rarely find it.
    assert box.dispatcher.reads.read_sent(box.server._map) is False
    assert not box.dispatcher.queue and box.channel.request is None
    box.dispatcher.turns.release()
    assert box.wakes[0] == 0


def test_requests_read_together_are_served_in_the_order_their_clients_last_had_an_answer(box: _Box) -> None:
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    later = HeadWithBodyChannel(box.server, ours, ("127.0.0.1", 2), box.server.adj, box.server._map)
    try:
        assert box.channel._fileno < later._fileno  # descriptor order would serve box.channel first
        box.channel.last_activity, later.last_activity = 200.0, 100.0
        box.peer.sendall(GET_HELLO)
        peer.sendall(GET_HELLO)
        box.dispatcher.turns.acquire()
        assert box.loop_turn() is False  # the loop steps aside
        assert box.dispatcher.reads.read_sent(box.server._map) is True
        assert list(box.dispatcher.queue) == [later, box.channel]
        box.dispatcher.queue.clear()
        box.dispatcher.turns.release()
    finally:
        later.del_channel()
        ours.close()
        peer.close()


def test_a_request_ending_on_a_connection_the_loop_stopped_reading_wakes_it_when_the_turn_falls_free(
    box: _Box,
) -> None:
    # The client had its answer before the request's bookkeeping ended and sent the next request:
    # two requests over the lookahead, so the loop stopped reading the connection (its own rule,
    # not stepping aside). The holder then found nothing more to read and let the turn go.
    box.channel.requests = [object(), object()]
    assert box.loop_turn() is False
    box.channel.requests = []
    box.dispatcher.turns.acquire()
    assert box.finish_request() == 0  # the holder reads it for now
    box.dispatcher.turns.release()
    assert box.wakes[0] == 1  # nobody reads it now but the loop: woken, not left to its 1 s timeout


def test_a_request_arriving_in_pieces_is_left_to_the_loop_once_its_first_piece_is_in(box: _Box) -> None:
    box.dispatcher.turns.acquire()
    assert box.loop_turn() is False
    box.peer.sendall(POST_TEN + b"01234")
    box.dispatcher.reads.read_sent(box.server._map)
    assert box.channel.request is not None and not box.dispatcher.queue
    assert box.wakes[0] == 1  # the holder reads only between requests: the loop is asked to take over
    assert box.loop_turn() is True  # and watches the connection, though the turn is still held
    box.peer.sendall(b"56789")
    box.dispatcher.reads.read_sent(box.server._map)
    assert box.channel.request is not None and not box.dispatcher.queue  # the holder left it
    box.channel.handle_read()  # the loop reads the rest
    assert list(box.dispatcher.queue) == [box.channel]
    box.dispatcher.queue.clear()
    box.dispatcher.turns.release()


def test_a_request_ending_with_the_next_one_in_part_wakes_the_loop_though_the_turn_is_held(box: _Box) -> None:
    box.dispatcher.turns.acquire()
    assert box.loop_turn() is False
    box.peer.sendall(POST_TEN + b"01")
    box.channel.handle_read()
    assert box.channel.request is not None
    assert box.finish_request() == 1  # the turn's holder would not read the rest
    box.dispatcher.turns.release()


def test_a_read_that_finds_nothing_leaves_the_connection_as_it_was(box: _Box) -> None:
    # Both threads saw the connection readable and the other one read it first.
    box.channel.handle_read()
    assert box.channel.connected and not box.channel.will_close and box.wakes[0] == 0


def test_a_client_hanging_up_seen_by_a_request_thread_is_closed_by_the_loop(box: _Box) -> None:
    box.peer.shutdown(socket.SHUT_WR)
    box.channel.handle_read()
    # Not closed here: the loop may be selecting on this socket. It is asked to close it.
    assert box.channel.will_close and box.wakes[0] == 1 and box.ours.fileno() != -1
    assert box.channel.writable()
    box.channel.handle_write()
    assert not box.channel.connected and box.ours.fileno() == -1


class _ReadsByThread(HeadWithBodyChannel):
    readers: list[str] = []
    upload_readers: list[str] = []

    def handle_read(self) -> None:
        reader = threading.current_thread().name
        self.readers.append(reader)
        if self.request is not None and self.request.headers.get("X_UPLOAD"):
            self.upload_readers.append(reader)
        super().handle_read()


def test_concurrent_clients_are_read_by_request_threads_and_none_waits_for_the_loop(ollama_a: StandinServer) -> None:
    doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[ollama_a.url])
    _ReadsByThread.readers = readers = []
    slowest = [0.0]
    failures: list[str] = []

    def client(requests: int) -> None:
        with httpx.Client(base_url=live.url, timeout=5) as http:
            for _ in range(requests):
                started = time.monotonic()
                reply = http.post("/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER})
                slowest[0] = max(slowest[0], time.monotonic() - started)
                if reply.status_code != 200 or not reply.json()["choices"]:
                    failures.append(reply.text)

    with LiveGateway(build(doc), channel_class=_ReadsByThread) as live:
        client(60)  # one after another: each request arrives with the turn free
        clients = [threading.Thread(target=client, args=(30,)) for _ in range(8)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(60)
    assert not failures
    # A request left unread until the loop's 1 s timeout would show here.
    assert slowest[0] < 0.5
    assert any(name.startswith("waitress-") for name in readers), "request threads never read a request"
    assert any(not name.startswith("waitress-") for name in readers), "the loop never read a request"


def test_a_request_sent_in_pieces_under_load_is_read_by_the_loop(ollama_a: StandinServer) -> None:
    doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[ollama_a.url])
    body = orjson.dumps({"model": "qwen3:4b", "messages": [{"role": "user", "content": "x" * 60_000}]})
    pieces = [body[at:at + 3_000] for at in range(0, len(body), 3_000)]
    _ReadsByThread.readers, _ReadsByThread.upload_readers = [], []
    busy = threading.Event()
    busy.set()

    def keep_busy() -> None:
        with httpx.Client(base_url=live.url, timeout=5) as http:
            while busy.is_set():
                http.post("/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER})

    with LiveGateway(build(doc), channel_class=_ReadsByThread) as live:
        clients = [threading.Thread(target=keep_busy) for _ in range(8)]
        for thread in clients:
            thread.start()
        try:
            time.sleep(0.2)
            with socket.create_connection(("127.0.0.1", live.server.effective_port), timeout=5) as upload:
                upload.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nX-Upload: 1\r\n"
                               b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
                for piece in pieces:
                    upload.sendall(piece)
                    time.sleep(0.003)
                answer = upload.recv(65536)
        finally:
            busy.clear()
            for thread in clients:
                thread.join(10)
    assert answer.startswith(b"HTTP/1.1 200 OK")
    # Request threads read only between the requests they serve, one piece each time; under this
    # load they would have read most of the upload had it been left to them.
    by_request_threads = [name for name in _ReadsByThread.upload_readers if name.startswith("waitress-")]
    assert len(_ReadsByThread.upload_readers) >= len(pieces) // 2
    assert len(by_request_threads) <= 2, by_request_threads
