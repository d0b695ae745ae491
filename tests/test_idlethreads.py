"""The request thread that went idle last takes the next request, so steady traffic keeps reusing
the same few threads (and their touched stacks) out of the crowd-sized pool."""

from __future__ import annotations

import threading

from gateway.serving.idlethreads import LastIdleFirst
from gateway.serving.server import TurnTakingDispatcher
from tests.gateway_harness import until


def _parked(lock: threading.Lock, condition: LastIdleFirst, count: int) -> bool:
    with lock:
        return condition.waiting == count


def test_notify_wakes_the_thread_that_began_waiting_last() -> None:
    lock = threading.Lock()
    condition = LastIdleFirst(lock)
    woken: list[str] = []
    go: dict[str, bool] = {}

    def park(name: str) -> None:
        with lock:
            while not go.get(name):
                condition.wait()
                if not go.get(name):  # woken for another: park again, now the newest waiter
                    woken.append(f"{name} (not its turn)")
            woken.append(name)

    threads = []
    for count, name in enumerate(["first", "second", "third"], start=1):
        thread = threading.Thread(target=park, args=(name,), daemon=True)
        thread.start()
        threads.append(thread)
        until(lambda count=count: _parked(lock, condition, count), 5)
    with lock:
        go["third"] = True
        condition.notify()
    threads[2].join(5)
    with lock:
        go["second"] = go["first"] = True
        condition.notify_all()
    for thread in threads:
        thread.join(5)
    assert woken[0] == "third" and sorted(woken[1:]) == ["first", "second"]
    assert not condition.waiting


class _NamingTask:
    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.done = threading.Event()

    def service(self) -> None:
        self.names.append(threading.current_thread().name)
        self.done.set()

    def cancel(self) -> None:
        pass


def _all_idle(dispatcher: TurnTakingDispatcher, count: int) -> bool:
    with dispatcher.lock:  # a thread counts itself idle and parks under this lock, in one step
        return len(dispatcher.threads) == count and dispatcher.active_count == 0


def test_the_most_recently_idle_request_thread_takes_the_next_request() -> None:
    """waitress's pool wakes the longest-idle thread: these ten requests, one after another, would
    be served by the pool's threads in rotation, each touching its own stack."""
    dispatcher = TurnTakingDispatcher(8)
    names: list[str] = []
    try:
        until(lambda: _all_idle(dispatcher, 8), 10)
        for _ in range(10):
            task = _NamingTask(names)
            dispatcher.add_task(task)
            assert task.done.wait(5)
            until(lambda: _all_idle(dispatcher, 8), 10)  # back among the idle
        assert len(set(names)) == 1, f"requests served by {len(set(names))} different threads: {names}"
    finally:
        dispatcher.shutdown(timeout=5)
    assert not dispatcher.threads
