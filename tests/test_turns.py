"""Request threads take turns in arrival order, and give the turn up whenever they wait."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable

import pytest

from gateway import turns
from gateway.errors import ServerBusy
from gateway.httpclient import Pace, Pool, _Connection
from gateway.resources.limits import InflightLimiter
from gateway.serving.server import TurnTakingDispatcher
from gateway.turns import Turns
from tests.gateway_harness import until
from tests.standins.fixtures import StandinServer

CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


def _until(condition: Callable[[], bool], limit: float = 5.0) -> None:
    until(condition, limit, interval=0.001)


def assert_set(event: threading.Event) -> None:
    assert event.wait(5)


def _queue_up(gate: Turns, names: list[str], order: list[str], *, resuming: bool = False) -> list[threading.Thread]:
    """Start one thread per name, each queued on ``gate`` before the next one starts."""
    threads = []
    for name in names:
        def take(name: str = name) -> None:
            gate.acquire(resuming=resuming)
            order.append(name)
            gate.release()

        queued = gate.queued
        thread = threading.Thread(target=take)
        thread.start()
        _until(lambda queued=queued: gate.queued == queued + 1)
        threads.append(thread)
    return threads


def test_turns_are_handed_over_in_arrival_order() -> None:
    gate = Turns()
    gate.acquire()
    order: list[str] = []
    threads = _queue_up(gate, [f"r{i}" for i in range(6)], order)
    gate.release()
    for thread in threads:
        thread.join(5)
    assert order == [f"r{i}" for i in range(6)]


def test_requests_resuming_after_a_wait_go_before_new_ones() -> None:
    gate = Turns()
    gate.acquire()
    order: list[str] = []
    threads = _queue_up(gate, ["new1", "new2"], order)
    threads += _queue_up(gate, ["resumed1", "resumed2"], order, resuming=True)
    gate.release()
    for thread in threads:
        thread.join(5)
    assert order == ["resumed1", "resumed2", "new1", "new2"]


def test_waiting_lets_the_next_request_run_and_resumes_after() -> None:
    gate = Turns()
    events: list[str] = []
    other_ran = threading.Event()

    def slow_request() -> None:
        events.append("slow starts")
        with turns.waiting():
            assert not turns.held()
            assert other_ran.wait(5), "the other request never got a turn"
        assert turns.held()
        events.append("slow resumes")

    def quick_request() -> None:
        events.append("quick runs")
        other_ran.set()

    first = threading.Thread(target=gate.run, args=(slow_request,))
    first.start()
    _until(lambda: events == ["slow starts"])
    gate.run(quick_request)
    first.join(5)
    assert events == ["slow starts", "quick runs", "slow resumes"]
    assert not turns.held()


def test_waiting_without_a_turn_changes_nothing() -> None:
    assert not turns.held()
    with turns.waiting():
        assert not turns.held()
    assert not turns.held()


def _holder_blocks(gate: Turns, work: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run ``work`` in its own turn on a thread; return the thread and where its result lands."""
    result: list[object] = []

    def run() -> None:
        try:
            result.append(gate.run(work))
        except Exception as exc:  # surfaced to the test through ``result``
            result.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_a_slow_backend_call_gives_up_the_turn_while_it_waits() -> None:
    server = StandinServer.vllm(model="m")
    pool = Pool(server.url, 2)
    try:
        assert pool.post("/v1/chat/completions", CHAT, read_timeout=5, connect_timeout=1).status_code == 200
        assert pool.pace.fast
        server.set_fault("slow", seconds=0.5)
        gate = Turns()
        thread, result = _holder_blocks(
            gate, lambda: pool.post("/v1/chat/completions", CHAT, read_timeout=5, connect_timeout=1).read())
        _until(lambda: server.request_log and server.request_log[-1]["fault"] == "slow")
        started = time.monotonic()
        gate.run(lambda: None)  # another request's turn, while the first still waits for its answer
        assert time.monotonic() - started < 0.3
        thread.join(5)
        assert json.loads(result[0])["object"] == "chat.completion"  # type: ignore[arg-type]
    finally:
        pool.close()
        server.stop()


def test_a_backend_connection_remembers_whether_its_latest_wait_was_quick() -> None:
    """A slow answer makes the next read give the turn up at once; a quick one lets it hold the
    turn briefly again. (Over TCP a response may arrive in several reads, so this uses a pair.)"""
    pace = Pace()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    conn = _Connection(ours, pace)
    conn.timeout = 5
    try:
        def read_in_turn() -> int:
            return Turns().run(conn.recv)

        sender = threading.Timer(0.05, theirs.sendall, (b"late",))
        sender.start()
        assert read_in_turn() == 4
        sender.join()
        assert not pace.fast  # the next read gives the turn up without holding it first
        theirs.sendall(b"ready")
        assert read_in_turn() == 5
        assert pace.fast
    finally:
        conn.close()
        theirs.close()


def test_a_backend_that_never_answers_times_out_after_the_read_timeout() -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    conn = _Connection(ours, Pace())
    conn.timeout = 0.2
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            Turns().run(conn.recv)
        assert 0.15 < time.monotonic() - started < 2
    finally:
        conn.close()
        theirs.close()


def test_a_wait_for_a_request_slot_gives_up_the_turn() -> None:
    limiter = InflightLimiter(1, queue_size=1, queue_timeout=30)
    limiter.acquire()  # the only slot is taken by a request that needs a turn to finish
    gate = Turns()
    thread, result = _holder_blocks(gate, limiter.acquire)
    time.sleep(0.01)
    gate.run(limiter.release)  # the slot holder finishes in its turn while the other waits
    thread.join(5)
    assert result == [None], "the waiting request should have got the freed slot"


def test_request_slots_are_counted_and_a_full_limiter_without_a_queue_answers_busy() -> None:
    limiter = InflightLimiter(2)
    limiter.acquire()
    limiter.acquire()
    with pytest.raises(ServerBusy) as busy:
        limiter.acquire()
    assert busy.value.status == 429 and busy.value.headers == {"Retry-After": "1"}
    limiter.release()
    limiter.acquire()  # the freed slot is taken at once
    limiter.release()
    limiter.release()
    with pytest.raises(ValueError):
        limiter.release()  # a release without an acquire would let one request too many through


def test_every_queued_request_runs_when_turns_pass_between_many_threads() -> None:
    threads = 4
    gate = Turns()
    done: list[int] = []
    lock = threading.Lock()

    def request(n: int) -> None:
        with turns.waiting():
            time.sleep(0.001)
        with lock:
            done.append(n)

    def worker_loop(n: int) -> None:
        for i in range(50):
            gate.run(lambda i=i: request(n * 100 + i))

    workers = [threading.Thread(target=worker_loop, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert sorted(done) == sorted(n * 100 + i for n in range(threads) for i in range(50))
    assert gate.queued == 0


class _Task:
    def __init__(self, name: str, log: list[str], work: Callable[[], None] = lambda: None) -> None:
        self.name, self.log, self.work = name, log, work
        self.done = threading.Event()

    def service(self) -> None:
        self.log.append(f"{self.name} start")
        self.work()
        self.log.append(f"{self.name} end")
        self.done.set()

    def cancel(self) -> None:
        self.log.append(f"{self.name} cancelled")


def test_dispatcher_serves_queued_requests_in_arrival_order() -> None:
    dispatcher = TurnTakingDispatcher(4)
    log: list[str] = []
    release_first = threading.Event()
    try:
        tasks = [_Task("r0", log, lambda: assert_set(release_first))]
        tasks += [_Task(f"r{i}", log) for i in range(1, 8)]
        for task in tasks:
            dispatcher.add_task(task)
        release_first.set()
        for task in tasks:
            assert task.done.wait(5)
        assert [entry for entry in log if entry.endswith("start")] == [f"r{i} start" for i in range(8)]
    finally:
        dispatcher.shutdown(timeout=2)


def test_dispatcher_serves_other_requests_while_one_waits_for_a_slow_backend() -> None:
    dispatcher = TurnTakingDispatcher(4)
    log: list[str] = []
    backend_answers = threading.Event()

    def slow() -> None:
        with turns.waiting():
            assert backend_answers.wait(5)

    try:
        waiting_task = _Task("slow", log, slow)
        dispatcher.add_task(waiting_task)
        _until(lambda: log == ["slow start"])
        quick = [_Task(f"quick{i}", log) for i in range(3)]
        for task in quick:
            dispatcher.add_task(task)
        for task in quick:
            assert task.done.wait(5), "a request waited behind another one's slow backend"
        backend_answers.set()
        assert waiting_task.done.wait(5)
        assert log[-1] == "slow end"
    finally:
        dispatcher.shutdown(timeout=2)


def test_dispatcher_shutdown_cancels_what_never_started_and_stops_its_threads() -> None:
    dispatcher = TurnTakingDispatcher(1)
    log: list[str] = []
    blocker = threading.Event()
    first = _Task("first", log, lambda: assert_set(blocker))
    dispatcher.add_task(first)
    _until(lambda: log == ["first start"])
    dispatcher.add_task(_Task("queued", log))
    dispatcher.shutdown(cancel_pending=True, timeout=0.2)  # "first" is still running
    assert "queued cancelled" in log
    blocker.set()
    assert first.done.wait(5)
    _until(lambda: not dispatcher.threads)
    assert "queued start" not in log


def test_a_large_pool_starts_its_threads_beside_the_server_and_shuts_down_whole() -> None:
    started = time.monotonic()
    dispatcher = TurnTakingDispatcher(200)
    assert len(dispatcher.threads) < 200  # the first batch at once; the rest beside the running server
    _until(lambda: len(dispatcher.threads) == 200, limit=30)
    assert time.monotonic() - started < 30
    dispatcher.shutdown(timeout=10)
    assert not dispatcher.threads


def test_a_pool_shut_down_while_it_starts_threads_ends_with_none() -> None:
    dispatcher = TurnTakingDispatcher(2000)
    dispatcher.shutdown(timeout=20)
    _until(lambda: not dispatcher.threads, limit=30)
