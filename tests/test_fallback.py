"""Failover across hosts, engines and models; retries, cooldown, deadlines, and streams."""

from __future__ import annotations

import json
import time

import pytest

from tests.gateway_harness import FakeClock, client_for, gateway_config, upstreams_with_clock
from tests.standins.fixtures import StandinServer

USER = [{"role": "user", "content": "hi"}]
CHAT = {"model": "qwen3:4b", "messages": USER}


def chat_doc(*urls: str, **kw: object) -> dict:
    return gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=list(urls), **kw)


def test_dead_primary_host_fails_over_to_the_second(ollama_a: StandinServer, ollama_b: StandinServer) -> None:
    ollama_a.stop()
    with client_for(chat_doc(ollama_a.url, ollama_b.url)) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 200
    assert resp.json["choices"][0]["message"]["content"].startswith("[ollama-b]")


@pytest.mark.parametrize("fault", ["error500", "error429", "down"])
def test_failing_primary_is_retried_then_skipped(
    ollama_a: StandinServer, ollama_b: StandinServer, fault: str
) -> None:
    ollama_a.set_fault(fault)
    with client_for(chat_doc(ollama_a.url, ollama_b.url)) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 200
    assert "[ollama-b]" in resp.json["choices"][0]["message"]["content"]
    tries_on_a = len(ollama_a.bodies("/v1/chat/completions"))
    assert tries_on_a == (2 if fault != "down" else tries_on_a)  # 1 + retries for HTTP errors


def test_transient_500_is_retried_on_the_same_host(ollama_a: StandinServer) -> None:
    ollama_a.set_fault("error500", count=1)
    with client_for(chat_doc(ollama_a.url)) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 200
    assert len(ollama_a.bodies("/v1/chat/completions")) == 2


def test_model_fallback_chain_crosses_engines(ollama_a: StandinServer, vllm_qwen: StandinServer) -> None:
    models = [
        {"name": "Qwen/Qwen3-4B", "engine": "vllm", "aliases": ["VLM_QWEN3"], "fallback": ["VLM_SMALL"]},
        {"name": "llava-phi3", "engine": "ollama", "aliases": ["VLM_SMALL"]},
    ]
    vllm_qwen.stop()
    with client_for(gateway_config(models, ollama=[ollama_a.url], vllm=[vllm_qwen.url])) as (client, gw):
        resp = client.simulate_post("/v1/chat/completions", json={"model": "VLM_QWEN3", "messages": USER})
        metrics = gw.metrics.render().decode()
    assert resp.status_code == 200
    assert resp.json["model"] == "VLM_QWEN3"
    assert resp.headers["X-Vilms-Model"] == "llava-phi3"
    assert 'vilms_fallbacks_total{from_model="Qwen/Qwen3-4B",kind="model",to_model="llava-phi3"} 1.0' in metrics


def test_every_host_down_is_a_503_listing_what_was_tried(ollama_a: StandinServer, ollama_b: StandinServer) -> None:
    ollama_a.stop()
    ollama_b.stop()
    with client_for(chat_doc(ollama_a.url, ollama_b.url)) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 503
    message = resp.json["error"]["message"]
    assert ollama_a.url in message and ollama_b.url in message


def test_backend_500s_everywhere_is_a_502(ollama_a: StandinServer) -> None:
    ollama_a.set_fault("error500", message="CUDA out of memory")
    with client_for(chat_doc(ollama_a.url)) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 502
    assert "CUDA out of memory" in resp.json["error"]["message"]


def test_backend_429_everywhere_is_a_429_with_retry_after(ollama_a: StandinServer) -> None:
    ollama_a.set_fault("error429")
    with client_for(chat_doc(ollama_a.url)) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "1"


def test_model_not_pulled_anywhere_is_a_404(ollama_a: StandinServer) -> None:
    doc = gateway_config([{"name": "qwen3:32b", "engine": "ollama"}], ollama=[ollama_a.url])
    with client_for(doc) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json={"model": "qwen3:32b", "messages": USER})
    assert resp.status_code == 404
    assert "is it pulled" in resp.json["error"]["message"]


def test_hanging_backend_gives_504_within_the_deadline(ollama_a: StandinServer) -> None:
    ollama_a.set_fault("hang")
    doc = chat_doc(ollama_a.url, gateway={"request-deadline": 1.0, "read-timeout": 30})
    with client_for(doc) as (client, _):
        started = time.monotonic()
        resp = client.simulate_post("/v1/chat/completions", json=CHAT)
        elapsed = time.monotonic() - started
    assert resp.status_code == 504
    assert elapsed < 3.0


def test_slow_primary_times_out_and_the_second_host_answers(ollama_a: StandinServer, ollama_b: StandinServer) -> None:
    ollama_a.set_fault("slow", seconds=5)
    doc = chat_doc(ollama_a.url, ollama_b.url, gateway={"read-timeout": 0.5, "request-deadline": 4})
    with client_for(doc) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 200
    assert "[ollama-b]" in resp.json["choices"][0]["message"]["content"]


def test_failing_endpoint_is_cooled_down_then_readmitted(ollama_a: StandinServer, ollama_b: StandinServer) -> None:
    clock = FakeClock()
    doc = chat_doc(ollama_a.url, ollama_b.url, gateway={"cooldown-failures": 2, "cooldown-seconds": 30})
    ollama_a.stop()
    with client_for(doc, upstreams=upstreams_with_clock(doc, clock), clock=clock) as (client, gw):
        for _ in range(2):
            assert client.simulate_post("/v1/chat/completions", json=CHAT).status_code == 200
        assert gw.upstreams.is_cooled(ollama_a.url)
        ollama_a.start()
        # Still cooling down: the healthy-again host is skipped, B answers.
        resp = client.simulate_post("/v1/chat/completions", json=CHAT)
        assert "[ollama-b]" in resp.json["choices"][0]["message"]["content"]
        assert ollama_a.bodies("/v1/chat/completions") == []
        clock.advance(31)
        resp = client.simulate_post("/v1/chat/completions", json=CHAT)
        assert "[ollama-a]" in resp.json["choices"][0]["message"]["content"]
        assert not gw.upstreams.is_cooled(ollama_a.url)


def test_probe_readmits_a_cooled_endpoint_early(ollama_a: StandinServer, ollama_b: StandinServer) -> None:
    doc = chat_doc(ollama_a.url, ollama_b.url, gateway={"cooldown-failures": 1, "cooldown-seconds": 300})
    ollama_a.stop()
    with client_for(doc) as (client, gw):
        client.simulate_post("/v1/chat/completions", json=CHAT)
        assert gw.upstreams.is_cooled(ollama_a.url)
        ollama_a.start()
        gw.prober.probe_all()
        assert not gw.upstreams.is_cooled(ollama_a.url)


def test_all_endpoints_cooled_are_still_tried_as_a_last_resort(ollama_a: StandinServer) -> None:
    doc = chat_doc(ollama_a.url, gateway={"cooldown-failures": 1, "cooldown-seconds": 300})
    ollama_a.set_fault("down", count=1)
    with client_for(doc) as (client, gw):
        assert client.simulate_post("/v1/chat/completions", json=CHAT).status_code == 503
        assert gw.upstreams.is_cooled(ollama_a.url)
        assert client.simulate_post("/v1/chat/completions", json=CHAT).status_code == 200


def stream_events(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


def test_stream_fails_over_before_the_first_byte(ollama_a: StandinServer, ollama_b: StandinServer) -> None:
    ollama_a.set_fault("error500")
    with client_for(chat_doc(ollama_a.url, ollama_b.url)) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json={**CHAT, "stream": True})
    events = stream_events(resp.text)
    assert resp.status_code == 200
    assert events[-1] == "[DONE]"
    assert "[ollama-b]" in "".join(
        json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1] if json.loads(e)["choices"]
    )


def test_stream_cut_midway_ends_with_an_error_event_and_done(ollama_a: StandinServer, ollama_b: StandinServer) -> None:
    ollama_a.set_fault("cut", after=2)
    with client_for(chat_doc(ollama_a.url, ollama_b.url)) as (client, gw):
        resp = client.simulate_post("/v1/chat/completions", json={**CHAT, "stream": True})
        interrupted = gw.metrics.streams_interrupted._value.get()
    events = stream_events(resp.text)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "upstream_stream_interrupted"
    # Whole events only before the error: every data line parses.
    for event in events[:-2]:
        json.loads(event)
    # No failover after the first byte: B never saw the request.
    assert ollama_b.bodies("/v1/chat/completions") == []
    assert interrupted == 1
