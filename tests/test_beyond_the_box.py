"""engine: openai models (cloud services, peer boxes): key failover, edge first, the daily budget,
streams, vision, embeddings, /v1/models, `vilms-gateway route`, per-model figures, the hop marker."""

from __future__ import annotations

import datetime
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import cli
from tests.gateway_harness import client_for, gateway_config
from tests.standins.fixtures import StandinServer

# Long enough that their last four characters may be shown; the middles are what must never leak.
REVOKED = "sk-revoked-0123456789-AAAA"
LIMITED = "sk-limited-0123456789-BBBB"
GOOD = "sk-good-key-0123456789-CCCC"
KEYS = (REVOKED, LIMITED, GOOD)
PREFIX = "/v1beta/openai"  # not /v1: the gateway must use base-url as given
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture
def cloud() -> Iterator[StandinServer]:
    keys = {REVOKED: "revoked", LIMITED: "limited", GOOD: "ok"}
    with StandinServer.vllm(model="gpt-4o-mini", name="cloud", keys=keys, prefix=PREFIX) as server:
        yield server


@pytest.fixture
def cloud_embed() -> Iterator[StandinServer]:
    with StandinServer.vllm(model="text-embedding-3-small", name="cloud", keys={GOOD: "ok"},
                            prefix=PREFIX, embedding_dim=8) as server:
        yield server


def cloud_model(server: StandinServer, keys: tuple[str, ...] = KEYS, **extra: Any) -> dict[str, Any]:
    return {"name": "gpt-4o-mini", "engine": "openai", "aliases": ["CLOUD"],
            "base-url": server.url + PREFIX, "api-keys": list(keys), **extra}


def doc(local: StandinServer, cloud: StandinServer, **extra: Any) -> dict[str, Any]:
    models = [{"name": "qwen3:4b", "engine": "ollama", "fallback": ["CLOUD"]}, cloud_model(cloud, **extra)]
    return gateway_config(models, ollama=[local.url])


def chats(server: StandinServer) -> list[dict[str, Any]]:
    return [r for r in server.request_log if r["path"].endswith("/chat/completions")]


def events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [line for line in map(json.loads, stream.getvalue().splitlines()) if "event" in line]


def assert_no_full_key(*texts: str) -> None:
    for text in texts:
        for key in KEYS:
            assert key not in text
            assert key[:-4] not in text  # not even all but the shown tail


def test_refused_and_rate_limited_keys_fail_over_within_the_request(
    ollama_a: StandinServer, cloud: StandinServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ollama_a.stop()
    log = io.StringIO()
    config = doc(ollama_a, cloud)
    with client_for(config, access_stream=log) as (client, _):
        first = client.simulate_post("/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER})
        second = client.simulate_post("/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER})
        metrics = client.simulate_get("/metrics").text
    assert first.status_code == 200 and second.status_code == 200
    assert first.headers["X-Vilms-Model"] == "gpt-4o-mini"
    assert first.json["model"] == "qwen3:4b"
    sent = chats(cloud)
    # Three keys on the first request, in order; the second goes straight to the good one.
    assert [r["headers"]["authorization"] for r in sent] == [f"Bearer {k}" for k in (*KEYS, GOOD)]
    assert all(r["path"] == PREFIX + "/chat/completions" for r in sent)
    assert all(r["headers"]["x-vilms-hop"] == "1" for r in sent)
    assert [(e["event"], e["reason"], e["status"], e["key"]) for e in events(log)] == [
        ("key_failover", "refused", 401, "...AAAA"), ("key_failover", "rate_limited", 429, "...BBBB")]
    assert events(log)[1]["out_for_seconds"] == 30.0  # the service's Retry-After
    assert 'vilms_key_failovers_total{model="gpt-4o-mini",reason="refused"} 1.0' in metrics
    assert 'vilms_fallbacks_total{from_model="qwen3:4b",kind="remote",to_model="gpt-4o-mini"} 2.0' in metrics
    served = [json.loads(line) for line in log.getvalue().splitlines() if "path" in line]
    assert served[0]["served_model"] == "gpt-4o-mini" and served[0]["model"] == "qwen3:4b"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["route", "--config", str(path), "qwen3:4b"]) == 0
    route = capsys.readouterr().out
    assert "3 API keys" in route and cloud.url + PREFIX in route
    assert route.index("on ollama") < route.index("beyond the box")
    assert_no_full_key(log.getvalue(), metrics, route, first.text, second.text)


def test_every_key_out_is_an_error_that_names_no_key(cloud: StandinServer) -> None:
    log = io.StringIO()
    models = [cloud_model(cloud, keys=(REVOKED, LIMITED))]
    with client_for(gateway_config(models), access_stream=log) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json={"model": "CLOUD", "messages": USER})
        again = client.simulate_post("/v1/chat/completions", json={"model": "CLOUD", "messages": USER})
    assert resp.status_code == 503
    assert "every API key is out of use: 1 rate limited, 1 refused" in resp.json["error"]["message"]
    assert len(chats(cloud)) == 2  # the second request finds both keys out and sends nothing
    assert again.status_code == 503 and "every API key is out of use" in again.json["error"]["message"]
    # The service's 401 quotes the key whole; the gateway never passes it on.
    assert_no_full_key(resp.text, again.text, log.getvalue())


def test_a_relayed_service_error_never_carries_a_key(cloud: StandinServer) -> None:
    cloud.app.keys[GOOD] = "quoted"
    with client_for(gateway_config([cloud_model(cloud, keys=(GOOD,))])) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json={"model": "CLOUD", "messages": USER})
    assert resp.status_code == 400
    assert "made with key ...CCCC, is not valid" in resp.json["error"]["message"]
    assert_no_full_key(resp.text)


def test_key_refused_stays_out_for_key_cooldown(cloud: StandinServer) -> None:
    models = [cloud_model(cloud, keys=(REVOKED, GOOD), **{"key-cooldown": 7200})]
    log = io.StringIO()
    with client_for(gateway_config(models), access_stream=log) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json={"model": "CLOUD", "messages": USER})
    assert resp.status_code == 200
    assert events(log)[0]["out_for_seconds"] == 7200.0


def test_edge_first_no_request_leaves_the_box_while_a_local_endpoint_answers(
    ollama_a: StandinServer, cloud: StandinServer
) -> None:
    with client_for(doc(ollama_a, cloud)) as (client, gw):
        # Cool the local endpoint down as repeated failures would: it still answers, so it still serves.
        for _ in range(gw.config.service.cooldown_failures):
            gw.upstreams.record_failure(ollama_a.url, "connect_error")
        assert gw.upstreams.is_cooled(ollama_a.url)
        resp = client.simulate_post("/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER})
    assert resp.status_code == 200
    assert resp.headers["X-Vilms-Model"] == "qwen3:4b"
    assert chats(cloud) == []


def test_daily_budget_skips_the_fallback_until_the_next_day(
    ollama_a: StandinServer, cloud: StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ollama_a.stop()
    with client_for(doc(ollama_a, cloud, **{"max-requests-per-day": 1})) as (client, gw):
        day = [datetime.date(2026, 12, 7)]
        monkeypatch.setattr(gw.upstreams.remote.budgets["gpt-4o-mini"], "_today", lambda: day[0])
        body = {"model": "qwen3:4b", "messages": USER}
        assert client.simulate_post("/v1/chat/completions", json=body).status_code == 200
        spent = client.simulate_post("/v1/chat/completions", json=body)
        metrics = client.simulate_get("/metrics").text
        day[0] += datetime.timedelta(days=1)
        next_day = client.simulate_post("/v1/chat/completions", json=body)
    assert spent.status_code == 503
    assert "max-requests-per-day of 1 is spent" in spent.json["error"]["message"]
    assert 'vilms_remote_requests_left_today{model="gpt-4o-mini"} 0.0' in metrics
    assert next_day.status_code == 200
    # The first request walked the keys, the spent one sent nothing, the next day's went to the good key.
    assert len(chats(cloud)) == len(KEYS) + 1


def test_a_failed_cloud_request_spends_nothing(cloud: StandinServer) -> None:
    models = [cloud_model(cloud, keys=(REVOKED,), **{"max-requests-per-day": 5})]
    with client_for(gateway_config(models)) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json={"model": "CLOUD", "messages": USER})
        metrics = client.simulate_get("/metrics").text
    assert resp.status_code == 503
    assert 'vilms_remote_requests_left_today{model="gpt-4o-mini"} 5.0' in metrics


def test_stream_with_usage_through_openai_counts_tokens_per_model(cloud: StandinServer) -> None:
    models = [cloud_model(cloud, keys=(GOOD,))]
    with client_for(gateway_config(models)) as (client, _):
        plain = client.simulate_post("/v1/chat/completions", json={"model": "CLOUD", "messages": USER, "stream": True})
        before = client.simulate_get("/metrics").text
        resp = client.simulate_post("/v1/chat/completions", json={
            "model": "CLOUD", "messages": USER, "stream": True, "stream_options": {"include_usage": True}})
        after = client.simulate_get("/metrics").text
    assert plain.status_code == 200 and resp.status_code == 200
    events_out = [line[6:] for line in resp.text.split("\n\n") if line.startswith("data: ")]
    assert events_out[-1] == "[DONE]"
    usage = json.loads(events_out[-2])["usage"]
    assert chats(cloud)[-1]["body"]["stream_options"] == {"include_usage": True}
    assert "vilms_model_tokens_total{" not in before  # a stream that did not ask for usage is not read for it
    labels = 'requested="CLOUD",served="gpt-4o-mini"'
    assert f'vilms_model_tokens_total{{direction="in",{labels}}} {float(usage["prompt_tokens"])}' in after
    assert f'vilms_model_tokens_total{{direction="out",{labels}}} {float(usage["completion_tokens"])}' in after
    assert f"vilms_model_requests_total{{{labels}}} 2.0" in after


def test_plain_answers_count_tokens_for_local_models_too(ollama_a: StandinServer, cloud: StandinServer) -> None:
    with client_for(doc(ollama_a, cloud)) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER})
        metrics = client.simulate_get("/metrics").text
    usage = resp.json["usage"]
    labels = 'requested="qwen3:4b",served="qwen3:4b"'
    assert f'vilms_model_tokens_total{{direction="out",{labels}}} {float(usage["completion_tokens"])}' in metrics
    assert f"vilms_model_request_duration_seconds_count{{{labels}}} 1.0" in metrics


def test_images_go_to_the_service_as_the_client_sent_them(cloud: StandinServer) -> None:
    remote = "http://images.invalid/frame.jpg"  # fetched by the service, never by the gateway
    inline = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAA"
              "AAABJRU5ErkJggg==")
    content = [{"type": "text", "text": "what is this"},
               {"type": "image_url", "image_url": {"url": remote}},
               {"type": "image_url", "image_url": {"url": inline}}]
    models = [cloud_model(cloud, keys=(GOOD,))]
    # With an allow-list the gateway fetches images for local engines itself: not for a service.
    with client_for(gateway_config(models, gateway={"image-fetch-networks": ["127.0.0.0/8"]})) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json={
            "model": "CLOUD", "messages": [{"role": "user", "content": content}]})
    assert resp.status_code == 200
    sent = chats(cloud)[0]["body"]["messages"][0]["content"]
    assert [p["image_url"]["url"] for p in sent[1:]] == [remote, inline]


def test_embeddings_through_openai(cloud_embed: StandinServer) -> None:
    models = [{"name": "text-embedding-3-small", "type": "embedding", "engine": "openai",
               "base-url": cloud_embed.url + PREFIX, "api-keys": [GOOD]}]
    with client_for(gateway_config(models)) as (client, _):
        resp = client.simulate_post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": ["a", "b"]})
        metrics = client.simulate_get("/metrics").text
    assert resp.status_code == 200
    assert resp.headers["X-Vilms-Model"] == "text-embedding-3-small"
    labels = 'requested="text-embedding-3-small",served="text-embedding-3-small"'
    tokens = float(resp.json["usage"]["prompt_tokens"])
    assert f'vilms_model_tokens_total{{direction="in",{labels}}} {tokens}' in metrics
    assert len(resp.json["data"]) == 2 and len(resp.json["data"][0]["embedding"]) == 8
    assert [r["path"] for r in cloud_embed.request_log] == [PREFIX + "/embeddings"]


def test_models_list_names_the_service_host(ollama_a: StandinServer, cloud: StandinServer) -> None:
    with client_for(doc(ollama_a, cloud)) as (client, _):
        listed = {m["id"]: m["owned_by"] for m in client.simulate_get("/v1/models").json["data"]}
    assert listed == {"qwen3:4b": "vilms", "gpt-4o-mini": "127.0.0.1", "CLOUD": "127.0.0.1"}


def test_a_forwarded_request_is_answered_from_local_engines_or_fails(
    ollama_a: StandinServer, cloud: StandinServer
) -> None:
    body = {"model": "qwen3:4b", "messages": USER}
    hop = {"X-Vilms-Hop": "1"}
    with client_for(doc(ollama_a, cloud)) as (client, _):
        served = client.simulate_post("/v1/chat/completions", json=body, headers=hop)
        ollama_a.stop()
        refused = client.simulate_post("/v1/chat/completions", json=body, headers=hop)
        direct = client.simulate_post("/v1/chat/completions", json={**body, "model": "CLOUD"}, headers=hop)
    assert served.status_code == 200 and served.headers["X-Vilms-Model"] == "qwen3:4b"
    assert refused.status_code == 503
    assert direct.status_code == 503 and "never forwarded again" in direct.json["error"]["message"]
    assert chats(cloud) == []


def test_key_file_and_env(cloud: StandinServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"# cloud keys\n{REVOKED}\n\n{GOOD}\n")
    monkeypatch.setenv("VILMS_TEST_KEYS", f"{REVOKED},{GOOD}")
    for source in ({"api-key-file": str(key_file)}, {"api-key-env": "VILMS_TEST_KEYS"}):
        model = {**cloud_model(cloud), **source}
        del model["api-keys"]
        with client_for(gateway_config([model])) as (client, _):
            resp = client.simulate_post("/v1/chat/completions", json={"model": "CLOUD", "messages": USER})
        assert resp.status_code == 200
    assert [r["headers"]["authorization"][-4:] for r in chats(cloud)] == ["AAAA", "CCCC"] * 2


@pytest.mark.parametrize(("model", "problem"), [
    ({"name": "a", "engine": "openai"}, "serving.models[0].base-url: engine: openai needs exactly one base-url"),
    ({"name": "a", "engine": "openai", "base-url": "https://x.example/v1", "api-keys": ["k"], "api-key-env": "K"},
     "serving.models[0]: give one of api-keys, api-key-file or api-key-env"),
    ({"name": "a", "engine": "ollama", "api-keys": ["k"]}, "serving.models[0].api-keys: only for engine: openai"),
    ({"name": "a", "engine": "openai", "base-url": "https://x.example/v1", "api-key-env": "not a name"},
     "serving.models[0].api-key-env: 'not a name' is not an environment variable name"),
])
def test_config_rules_for_openai_models(model: dict[str, Any], problem: str) -> None:
    from gateway.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as err:
        parse_config(gateway_config([model]))
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


def test_validate_and_serve_refuse_a_missing_key_source(
    cloud: StandinServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.app import Gateway
    from gateway.config import parse_config
    from gateway.keys import KeysUnavailable

    model = {**cloud_model(cloud), "api-key-file": str(tmp_path / "missing")}
    del model["api-keys"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(gateway_config([model])))
    assert cli.main(["validate", "--config", str(path)]) == cli.EXIT_INVALID
    assert "serving.models[0].api-key-file:" in capsys.readouterr().err
    monkeypatch.delenv("VILMS_UNSET_KEYS", raising=False)
    model = {**cloud_model(cloud), "api-key-env": "VILMS_UNSET_KEYS"}
    del model["api-keys"]
    with pytest.raises(KeysUnavailable, match="VILMS_UNSET_KEYS is not set"):
        Gateway(parse_config(gateway_config([model])))


def test_a_service_that_is_down_is_cooled_down_and_shown_apart_on_ready(
    ollama_a: StandinServer, cloud: StandinServer
) -> None:
    cloud.stop()
    endpoint = cloud.url + PREFIX
    with client_for(doc(ollama_a, cloud)) as (client, gw):
        ollama_a.stop()
        body = {"model": "CLOUD", "messages": USER}
        for _ in range(gw.config.service.cooldown_failures):
            assert client.simulate_post("/v1/chat/completions", json=body).status_code == 503
        gw.prober.probe_all()
        ready = client.simulate_get("/health/ready")
    assert gw.upstreams.is_cooled(endpoint)
    assert ready.status_code == 503
    assert list(ready.json["backends"]) == [ollama_a.url]
    assert ready.json["remote"][endpoint]["cooled_down_for_seconds"] > 0
    assert ready.json["remote"][endpoint]["model"] == "gpt-4o-mini"
