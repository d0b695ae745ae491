"""Building gateways for tests: from a config dict, in-process (falcon TestClient) or served by a real
waitress server on loopback."""

from __future__ import annotations

import copy
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import falcon.testing
import httpx

from gateway.app import Gateway
from gateway.config import parse_config
from gateway.serving.channel import HeadWithBodyChannel, _serving
from gateway.serving.server import serve_in_turns
from gateway.upstream import Upstreams

FAST = {
    "connect-timeout": 0.5,
    "read-timeout": 5.0,
    "request-deadline": 10.0,
    "retries": 1,
    "backoff-base": 0.01,
    "backoff-max": 0.05,
    "cooldown-failures": 2,
    "cooldown-seconds": 30,
    "access-log": True,
}


def gateway_config(
    models: list[dict[str, Any]],
    *,
    ollama: list[str] | None = None,
    vllm: list[str] | None = None,
    platform: str = "dgpu",
    embedding: dict[str, Any] | None = None,
    aliases: dict[str, str] | None = None,
    gateway: dict[str, Any] | None = None,
    **serving: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "host": {"platform": platform},
        "serving": {"models": copy.deepcopy(models), "alternate-hosts": False, **serving},
        "gateway": {**FAST, **(gateway or {})},
    }
    if ollama:
        doc["serving"]["ollama-base-url"] = ollama[0]
        doc["serving"]["ollama-hosts"] = ollama[1:]
    if vllm:
        doc["serving"]["vllm-base-url"] = vllm[0]
        doc["serving"]["vllm-hosts"] = vllm[1:]
    if embedding is not None:
        doc["embedding"] = embedding
    if aliases is not None:
        doc["model-aliases"] = aliases
    return doc


def until(condition: Callable[[], bool], limit: float, *, interval: float = 0.005) -> None:
    """Wait for ``condition``, polling every ``interval``; fail the test after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(interval)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def build(document: dict[str, Any], **kwargs: Any) -> Gateway:
    return Gateway(parse_config(document), **kwargs)


@contextmanager
def client_for(document: dict[str, Any], **kwargs: Any) -> Iterator[tuple[falcon.testing.TestClient, Gateway]]:
    gateway = build(document, **kwargs)
    try:
        yield falcon.testing.TestClient(gateway.app), gateway
    finally:
        gateway.close()


def upstreams_with_clock(document: dict[str, Any], clock: FakeClock) -> Upstreams:
    return Upstreams(parse_config(document).service, clock=clock)


class LiveApp:
    """A WSGI app served in turns by waitress on 127.0.0.1, as the gateway serves (gateway/serving/)."""

    def __init__(self, app: Any, threads: int = 8, channel_class: type = HeadWithBodyChannel,
                 port: int = 0, **adjustments: Any) -> None:
        adjustments.setdefault("asyncore_use_poll", True)  # as the gateway serves (gateway/serving/server.py)
        self.server: Any = serve_in_turns(app, host="127.0.0.1", port=port, threads=threads, **adjustments)
        self.server.channel_class = channel_class
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self.address = ("127.0.0.1", int(self.server.effective_port))
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        pulled = threading.Event()

        def close_every_channel() -> None:
            # On the loop thread: closing sockets from another thread would pull them out from
            # under its select(). With its map empty, the loop returns. The loop may run this on
            # an earlier wake's byte, before the pull below has written to the trigger it closes.
            pulled.wait(5)
            for channel in list(self.server._map.values()):
                channel.close()

        # Workers first: one finishing a request wakes the loop through the trigger, which must
        # still be open then (closing it first raced them into EBADF).
        self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=2)
        try:
            self.server.trigger.pull_trigger(close_every_channel)
        finally:
            pulled.set()
        self._thread.join(5)


class LiveGateway(LiveApp):
    """The gateway served by waitress on 127.0.0.1, as a client on the LAN would meet it."""

    def __init__(self, gateway: Gateway, threads: int = 8, channel_class: type = HeadWithBodyChannel,
                 **adjustments: Any) -> None:
        super().__init__(gateway.app, threads, channel_class, **adjustments)
        self.gateway = gateway

    def __enter__(self) -> LiveGateway:
        self.gateway.start()
        super().__enter__()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.gateway.close()


@contextmanager
def live_gateway(document: dict[str, Any], threads: int = 8, adjustments: dict[str, Any] | None = None,
                 **kwargs: Any) -> Iterator[LiveGateway]:
    with LiveGateway(build(document, **kwargs), threads=threads, **(adjustments or {})) as live:
        yield live


def count_wakes(server: Any) -> list[int]:
    """Counts the loop thread's wake-ups through ``server``'s trigger pipe."""
    wakes = [0]
    trigger = server.trigger
    pull = trigger.pull_trigger

    def counted(thunk: object = None) -> None:
        wakes[0] += 1
        pull(thunk)

    trigger.pull_trigger = counted
    return wakes


class UnstartedServer:
    """One connection, over a socket pair, on a server whose loop never runs: the test plays the
    loop (``loop_turn``) and the request threads, and counts the loop's wakes."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.ours, self.peer = socket.socketpair()
        self.channel = HeadWithBodyChannel(server, self.ours, ("127.0.0.1", 1), server.adj, server._map)
        self.wakes = count_wakes(server)

    def loop_turn(self) -> bool:
        """What the loop does before each select(): asks the channel what to watch. Whether it
        watches the connection for reading."""
        reads = bool(self.channel.readable())
        self.channel.writable()
        return reads

    def finish_request(self) -> int:
        """A request on this channel ends (waitress then pulls the trigger); the wakes it caused."""
        before = self.wakes[0]
        _serving.channel = self.channel
        try:
            self.server.pull_trigger()
        finally:
            _serving.channel = None
        return self.wakes[0] - before

    def close(self) -> None:
        self.channel.del_channel()
        self.ours.close()
        self.peer.close()
        self.server.close()

