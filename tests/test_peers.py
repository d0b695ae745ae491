"""Three gateways on loopback as one site: each lists the other two as engine: openai fallbacks
(as the gateway role renders them with vilms_peer_fallback), and a forwarded request carries
X-Vilms-Hop so it is never forwarded again."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import falcon.testing
import httpx
import pytest

from tests.gateway_harness import LiveGateway, build, gateway_config
from tests.standins.fixtures import StandinServer

FLEET = "fleet-key-0123456789-ZZZZ"
MODEL = "qwen3:4b"
BOXES = ("a", "b", "c")


def box_config(engine: str, peers: dict[str, str]) -> dict[str, Any]:
    models: list[dict[str, Any]] = [{"name": MODEL, "engine": "ollama", "fallback": [f"{MODEL}@{p}" for p in peers]}]
    models += [{"name": f"{MODEL}@{peer}", "engine": "openai", "base-url": f"{url}/v1", "api-keys": [FLEET],
                "upstream-model": MODEL} for peer, url in peers.items()]
    return gateway_config(models, ollama=[engine], gateway={"api-keys": [FLEET]})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Site:
    def __init__(self, stack: ExitStack) -> None:
        self.engines = {box: stack.enter_context(StandinServer.ollama(models=[MODEL], name=f"engine-{box}"))
                        for box in BOXES}
        ports = {box: free_port() for box in BOXES}
        self.urls = {box: f"http://127.0.0.1:{port}" for box, port in ports.items()}
        self.logs = {box: io.StringIO() for box in BOXES}
        self.gateways = {}
        for box in BOXES:
            peers = {peer: self.urls[peer] for peer in BOXES if peer != box}
            gateway = build(box_config(self.engines[box].url, peers), access_stream=self.logs[box])
            self.gateways[box] = stack.enter_context(LiveGateway(gateway, port=ports[box])).gateway

    def ask(self, box: str) -> httpx.Response:
        return httpx.post(f"{self.urls[box]}/v1/chat/completions", timeout=30,
                          headers={"Authorization": f"Bearer {FLEET}"},
                          json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})

    def chat_requests(self, box: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.logs[box].getvalue().splitlines()]
        return [line for line in lines if line.get("path") == "/v1/chat/completions"]


@pytest.fixture
def site() -> Iterator[Site]:
    with ExitStack() as stack:
        yield Site(stack)


def test_a_box_without_its_engine_answers_through_a_peer(site: Site) -> None:
    site.engines["a"].stop()
    resp = site.ask("a")
    assert resp.status_code == 200
    assert resp.headers["X-Vilms-Model"] == f"{MODEL}@b"
    assert resp.json()["model"] == MODEL
    assert len(site.engines["b"].bodies("/v1/chat/completions")) == 1
    assert site.engines["c"].bodies("/v1/chat/completions") == []
    # B was asked with the fleet key and the hop marker, for the model by its own name.
    forwarded = site.engines["b"].request_log[-1]
    assert forwarded["body"]["model"] == MODEL
    assert site.chat_requests("b")[0]["served_model"] == MODEL


def test_a_forwarded_request_is_never_forwarded_again(site: Site) -> None:
    site.engines["a"].stop()
    site.engines["b"].stop()
    resp = site.ask("a")
    # B, whose engine is down too, fails A's request rather than passing it to C or back to A.
    assert resp.status_code == 200 and resp.headers["X-Vilms-Model"] == f"{MODEL}@c"
    # A saw only the client's request (nothing came back to it), C only A's (none from B). B saw
    # A's, tried again once after its 503 as any endpoint's 5xx is (gateway.retries: 1).
    assert len(site.chat_requests("a")) == 1 and len(site.chat_requests("c")) == 1
    assert [line["status"] for line in site.chat_requests("b")] == [503, 503]
    site.engines["c"].stop()
    for box in BOXES:
        site.logs[box].truncate(0)
        site.logs[box].seek(0)
    failed = site.ask("a")
    assert failed.status_code == 502  # the peers answered, with errors
    assert FLEET[:-4] not in failed.text
    assert len(site.chat_requests("a")) == 1
    assert [line["status"] for line in site.chat_requests("b") + site.chat_requests("c")] == [503] * 4


def test_ready_counts_the_box_own_engines_and_lists_peers_apart(site: Site) -> None:
    site.engines["a"].stop()
    gateway = site.gateways["a"]
    gateway.prober.probe_all()
    resp = falcon.testing.TestClient(gateway.app).simulate_get("/health/ready")
    assert resp.status_code == 503  # peers answer, but this box's own engine does not
    assert list(resp.json["backends"]) == [site.engines["a"].url]
    assert set(resp.json["remote"]) == {f"{site.urls['b']}/v1", f"{site.urls['c']}/v1"}
    site.engines["a"].start()
    gateway.prober.probe_all()
    assert falcon.testing.TestClient(gateway.app).simulate_get("/health/ready").status_code == 200


def test_a_peer_that_is_down_is_cooled_down(site: Site) -> None:
    site.engines["a"].stop()
    gateway = site.gateways["a"]
    peer_b = f"{site.urls['b']}/v1"
    # B's gateway gone: connection refused, like any endpoint.
    gateway.upstreams.record_failure(peer_b, "connect_error")
    for _ in range(gateway.config.service.cooldown_failures - 1):
        gateway.upstreams.record_failure(peer_b, "connect_error")
    assert gateway.upstreams.is_cooled(peer_b)
    resp = site.ask("a")
    assert resp.headers["X-Vilms-Model"] == f"{MODEL}@c"  # the cooled peer is tried after the others


def test_a_stream_with_usage_crosses_to_a_peer_whole(site: Site) -> None:
    site.engines["a"].stop()
    body = {"model": MODEL, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", f"{site.urls['a']}/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {FLEET}"}) as resp:
        assert resp.status_code == 200 and resp.headers["X-Vilms-Model"] == f"{MODEL}@b"
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    usage = json.loads(events[-2])["usage"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in map(json.loads, events[:-2]) if c["choices"])
    assert text.startswith("[engine-b]")
    metrics = httpx.get(f"{site.urls['a']}/metrics", headers={"Authorization": f"Bearer {FLEET}"}).text
    labels = f'requested="{MODEL}",served="{MODEL}@b"'
    assert f'vilms_model_tokens_total{{direction="out",{labels}}} {float(usage["completion_tokens"])}' in metrics
