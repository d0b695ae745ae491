"""A request that finds every request slot busy waits in a bounded first-come-first-served queue,
and is refused (429 with Retry-After) only when the queue is full or its wait runs out; /health
and /metrics answer while every slot and queue place is taken."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from gateway.errors import ServerBusy
from gateway.resources.limits import InflightLimiter
from tests.gateway_harness import gateway_config, live_gateway, until
from tests.standins.fixtures import StandinServer

CHAT = {"model": "qwen3:4b", "messages": [{"role": "user", "content": "hi"}]}


def _until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    until(condition, limit, interval=0.005)


class _Waiters:
    """Threads that each take a slot from ``limiter`` (queueing one after another, in name order)
    and note when they got it."""

    def __init__(self, limiter: InflightLimiter) -> None:
        self.limiter = limiter
        self.served: list[str] = []
        self.refused: list[str] = []
        self.threads: list[threading.Thread] = []

    def queue(self, name: str) -> None:
        before = self.limiter.queued

        def take() -> None:
            try:
                self.limiter.acquire()
            except ServerBusy:
                self.refused.append(name)
            else:
                self.served.append(name)

        thread = threading.Thread(target=take, daemon=True)
        thread.start()
        self.threads.append(thread)
        _until(lambda: self.limiter.queued == before + 1 or name in self.refused)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(10)
            assert not thread.is_alive(), "a waiter hung"


def test_waiters_get_freed_slots_in_the_order_they_came() -> None:
    waits: list[tuple[float, str]] = []
    limiter = InflightLimiter(1, queue_size=8, queue_timeout=30, on_wait=lambda s, o: waits.append((s, o)))
    limiter.acquire()
    waiters = _Waiters(limiter)
    names = [f"r{i}" for i in range(6)]
    for name in names:
        waiters.queue(name)
    for count in range(1, len(names) + 1):
        limiter.release()  # the slot passes to the oldest waiter, who keeps it until released here
        _until(lambda count=count: len(waiters.served) == count)
    waiters.join()
    assert waiters.served == names and not waiters.refused
    assert [outcome for _, outcome in waits] == ["served"] * len(names)
    limiter.release()
    assert limiter.queued == 0


def test_a_newcomer_never_takes_a_freed_slot_ahead_of_the_queue() -> None:
    limiter = InflightLimiter(1, queue_size=4, queue_timeout=30)
    limiter.acquire()
    waiters = _Waiters(limiter)
    waiters.queue("queued")
    limiter.release()
    _until(lambda: waiters.served == ["queued"])
    waiters.queue("newcomer")  # the slot is the queued one's now: the newcomer waits
    assert waiters.served == ["queued"]
    limiter.release()
    waiters.join()
    assert waiters.served == ["queued", "newcomer"]


def test_a_wait_that_runs_out_is_refused_with_retry_after_and_leaves_the_queue() -> None:
    waits: list[tuple[float, str]] = []
    limiter = InflightLimiter(1, queue_size=4, queue_timeout=0.2, on_wait=lambda s, o: waits.append((s, o)))
    limiter.acquire()
    with pytest.raises(ServerBusy) as busy:
        limiter.acquire()
    assert busy.value.status == 429 and busy.value.headers == {"Retry-After": "1"}
    assert "0.2 s" in busy.value.message
    assert limiter.queued == 0  # a timed-out waiter must not be handed the next slot
    assert len(waits) == 1 and waits[0][1] == "timeout" and waits[0][0] >= 0.15
    limiter.release()
    limiter.acquire()  # the slot freed above is free, not given to the gone waiter
    limiter.release()


def test_refused_at_once_only_when_the_queue_is_full() -> None:
    waits: list[str] = []
    limiter = InflightLimiter(1, queue_size=2, queue_timeout=30, on_wait=lambda s, o: waits.append(o))
    limiter.acquire()
    waiters = _Waiters(limiter)
    waiters.queue("a")
    waiters.queue("b")
    assert not waiters.refused  # two waiting: not refused, the queue holds two
    started = time.monotonic()
    with pytest.raises(ServerBusy) as busy:
        limiter.acquire()
    assert time.monotonic() - started < 1  # refused at once, not after a wait
    assert "2 requests are already waiting" in busy.value.message and busy.value.headers == {"Retry-After": "1"}
    assert waits == ["full"]
    limiter.release()
    _until(lambda: waiters.served == ["a"])
    limiter.release()
    waiters.join()
    assert waiters.served == ["a", "b"]


def _metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_served_gateway_queues_when_busy_refuses_when_full_and_health_still_answers() -> None:
    with StandinServer.ollama(models=["qwen3:4b"], name="busy") as backend:
        backend.set_fault("hang", paths=["/v1/chat/completions"])  # every slot stays taken
        doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[backend.url],
                             gateway={"threads": 8, "max-inflight": 2, "queue-size": 2, "queue-timeout": 60,
                                      "read-timeout": 60, "request-deadline": 60, "retries": 0})
        with live_gateway(doc, threads=8) as live, ThreadPoolExecutor(4) as pool:
            client = httpx.Client(base_url=live.url, timeout=30)

            def chat() -> httpx.Response:
                return httpx.post(live.url + "/v1/chat/completions", json=CHAT, timeout=60)

            in_slots: list[Future[Any]] = [pool.submit(chat) for _ in range(2)]
            _until(lambda: len(backend.bodies("/v1/chat/completions")) == 2)
            queued: list[Future[Any]] = [pool.submit(chat) for _ in range(2)]
            _until(lambda: _metric(live.url, "vilms_queue_depth") == 2)
            # Every slot and queue place is taken: health, readiness and metrics still answer at once.
            for path in ("/health", "/health/ready", "/metrics"):
                assert client.get(path).status_code in (200, 503), path
            refused = client.post("/v1/chat/completions", json=CHAT)
            assert refused.status_code == 429, refused.text
            assert refused.headers["Retry-After"] == "1"
            assert refused.json()["error"]["type"] == "rate_limit_error"
            assert not any(f.done() for f in queued), "a queued request was answered before a slot freed"
            backend.reset()  # the held requests are dropped; the queued ones get their slots
            assert [f.result(timeout=30).status_code for f in queued] == [200, 200]
            for f in in_slots:
                f.result(timeout=30)
            assert _metric(live.url, "vilms_queue_depth") == 0
            assert _metric(live.url, 'vilms_queue_refused_total{reason="full"}') == 1
            assert _metric(live.url, "vilms_queue_wait_seconds_count") == 2
            client.close()
