"""What every client sees: error shapes and statuses, auth, request ids, access log, metrics, and the
old gateway's five API behaviours."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from tests.gateway_harness import client_for, gateway_config
from tests.standins.fixtures import StandinServer

USER = [{"role": "user", "content": "hi"}]
KEY = "sk-edge-0123456789abcdef"


def assert_openai_error(resp, status: int, error_type: str) -> dict:  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.text
    error = resp.json["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == error_type
    assert "Traceback" not in resp.text
    return error


# -- the old gateway's API behaviours -------------------------------------------------------------
def test_old_health_check() -> None:
    with client_for(gateway_config([])) as (client, _):
        resp = client.simulate_get("/health_check")
    assert resp.status_code == 200 and resp.json == {"status": "ok"}


def test_old_get_on_chat_is_405_with_a_hint() -> None:
    with client_for(gateway_config([])) as (client, _):
        resp = client.simulate_get("/v1/chat/completions")
    error = assert_openai_error(resp, 405, "invalid_request_error")
    assert "Use POST /v1/chat/completions" in error["message"]
    assert resp.headers["Allow"] == "POST"


def test_old_chat_ok(ollama_a: StandinServer) -> None:
    with client_for(gateway_config([{"name": "qwen3:4b"}], ollama=[ollama_a.url], platform="js")) as (client, _):
        resp = client.simulate_post("/v1/chat/completions",
                                    json={"model": "qwen3:4b", "messages": [{"role": "user", "content": "ping"}],
                                          "stream": False})
    assert resp.status_code == 200
    assert resp.json["model"] == "qwen3:4b"
    assert resp.json["choices"][0]["message"]["content"].endswith("ping (images: 0)")


def test_old_embeddings_disabled() -> None:
    with client_for(gateway_config([], embedding={"enabled": False})) as (client, _):
        resp = client.simulate_post("/v1/embeddings", json={"model": "Qwen/Qwen3-Embedding-4B", "input": "hello"})
    error = assert_openai_error(resp, 400, "invalid_request_error")
    assert "Embedding is disabled" in error["message"]


def test_old_get_on_embeddings_is_405_with_a_hint() -> None:
    with client_for(gateway_config([])) as (client, _):
        resp = client.simulate_get("/v1/embeddings")
    assert "Use POST /v1/embeddings" in assert_openai_error(resp, 405, "invalid_request_error")["message"]


# -- error shapes ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "content_type", "status", "needle"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b"", "application/json", 400, "empty"),
        (b"[1, 2]", "application/json", 400, "JSON object"),
        (json.dumps({"model": 5, "messages": USER}).encode(), "application/json", 400, "'model'"),
        (json.dumps({"model": "qwen3:4b", "messages": "hi"}).encode(), "application/json", 400, "'messages'"),
        (json.dumps({"model": "qwen3:4b", "messages": [{"content": "x"}]}).encode(), None, 400, "role"),
        (json.dumps({"model": "qwen3:4b", "messages": USER, "temperature": "hot"}).encode(), None, 400, "number"),
        (json.dumps({"model": "qwen3:4b", "messages": USER, "stream": "yes"}).encode(), None, 400, "boolean"),
        (b"[" * 100000 + b"]" * 100000, "application/json", 400, "not valid JSON"),
        (b"--x\r\n", "multipart/form-data; boundary=x", 415, "not supported"),
        # The strict client contract (more in test_client_contract.py).
        (json.dumps({"model": "qwen3:4b", "messages": USER}).encode(), "text/plain", 415, "not supported"),
        (json.dumps({"model": "qwen3:4b", "messages": USER}).encode(), "application/x-www-form-urlencoded", 415,
         "not supported"),
        (b'{"model": "qwen3:4b", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
         "application/json", 400, "NaN"),
        (json.dumps({"model": "qwen3:4b", "messages": USER, "max_tokens": 0}).encode(), None, 400, "max_tokens"),
    ],
)
def test_bad_requests_get_a_4xx_in_openai_shape(
    body: bytes, content_type: str | None, status: int, needle: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    with client_for(gateway_config([{"name": "qwen3:4b"}])) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", body=body, headers=headers)
    assert needle in assert_openai_error(resp, status, "invalid_request_error")["message"]


def test_body_over_the_limit_is_413() -> None:
    with client_for(gateway_config([{"name": "qwen3:4b"}], gateway={"max-body-bytes": 4096})) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", body=b"x" * 5000,
                                    headers={"Content-Type": "application/json"})
    assert_openai_error(resp, 413, "invalid_request_error")


def test_unknown_route_and_method_are_openai_shaped() -> None:
    with client_for(gateway_config([])) as (client, _):
        assert_openai_error(client.simulate_get("/v2/whatever"), 404, "invalid_request_error")
        assert_openai_error(client.simulate_delete("/v1/models"), 405, "invalid_request_error")


def test_unknown_model_is_404_model_not_found() -> None:
    with client_for(gateway_config([{"name": "qwen3:4b"}])) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json={"model": "gpt-4o", "messages": USER})
    error = assert_openai_error(resp, 404, "invalid_request_error")
    assert error["code"] == "model_not_found" and "qwen3:4b" in error["message"]


def test_every_slot_busy_is_a_429_and_health_still_answers() -> None:
    with client_for(gateway_config([{"name": "qwen3:4b"}], gateway={"max-inflight": 1})) as (client, gw):
        gw.limiter.acquire()  # one long request is holding the only slot
        try:
            resp = client.simulate_post("/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER})
            assert_openai_error(resp, 429, "rate_limit_error")
            assert resp.headers["Retry-After"] == "1"
            assert client.simulate_get("/health").status_code == 200
        finally:
            gw.limiter.release()


# -- auth -----------------------------------------------------------------------------------------
def test_api_keys_guard_the_api_but_not_health(ollama_a: StandinServer, tmp_path: Path) -> None:
    key_file = tmp_path / "api-keys"
    key_file.write_text("# one key per line\nsk-from-file-0000000000\n")
    doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[ollama_a.url],
                         gateway={"api-keys": [KEY], "api-key-file": str(key_file)})
    with client_for(doc) as (client, _):
        assert_openai_error(client.simulate_get("/v1/models"), 401, "authentication_error")
        wrong = client.simulate_get("/v1/models", headers={"Authorization": "Bearer sk-wrong-key-123456"})
        error = assert_openai_error(wrong, 401, "authentication_error")
        assert "sk-wrong" not in error["message"]
        for key in (KEY, "sk-from-file-0000000000"):
            assert client.simulate_get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        for path in ("/health", "/health_check", "/health/ready"):
            assert client.simulate_get(path).status_code != 401
        assert client.simulate_get("/metrics").status_code == 401


def test_keys_never_reach_the_access_log(ollama_a: StandinServer) -> None:
    doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[ollama_a.url], gateway={"api-keys": [KEY]})
    stream = io.StringIO()
    with client_for(doc, access_stream=stream) as (client, _):
        client.simulate_post("/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER},
                             headers={"Authorization": f"Bearer {KEY}", "X-Request-ID": "req-42"})
        client.simulate_get("/v1/models", headers={"Authorization": "Bearer sk-wrong-key-123456"})
    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert KEY not in text and "sk-wrong" not in text
    chat = lines[0]
    assert chat["request_id"] == "req-42" and chat["status"] == 200
    assert chat["model"] == "qwen3:4b" and chat["endpoint"] == ollama_a.url
    assert lines[1]["status"] == 401 and len(lines) == 2


def test_access_log_off_writes_nothing_and_still_counts() -> None:
    stream = io.StringIO()
    with client_for(gateway_config([], gateway={"access-log": False}), access_stream=stream) as (client, _):
        client.simulate_get("/health")
        metrics = client.simulate_get("/metrics").text
    assert stream.getvalue() == ""
    assert 'route="/health",status="200"} 1.0' in metrics


class _BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_broken_access_log_stream_fails_no_request(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="vilms.gateway"), \
            client_for(gateway_config([]), access_stream=_BrokenStream()) as (client, _):
        answers = [client.simulate_get("/health").status_code for _ in range(3)]
    assert answers == [200, 200, 200]
    warnings = [r for r in caplog.records if "access log lines are being dropped" in r.getMessage()]
    assert len(warnings) == 1  # once per run of failures, not once per request


def test_request_id_is_taken_or_made_and_returned() -> None:
    with client_for(gateway_config([])) as (client, _):
        given = client.simulate_get("/health", headers={"X-Request-ID": "abc-123"})
        made = client.simulate_get("/health")
        hostile = client.simulate_get("/health", headers={"X-Request-ID": "x\u00e9" * 300})
    assert given.headers["X-Request-ID"] == "abc-123"
    assert len(made.headers["X-Request-ID"]) == 32
    assert hostile.headers["X-Request-ID"] != "x\u00e9" * 300


# -- models, readiness, metrics -------------------------------------------------------------------
def test_models_lists_models_aliases_and_the_embedding_model() -> None:
    doc = gateway_config([{"name": "qwen3:4b", "aliases": ["LLM"]}], aliases={"chat": "LLM"},
                         embedding={"enabled": True, "model": "all-MiniLM-L6-v2"})
    with client_for(doc) as (client, _):
        listing = client.simulate_get("/v1/models").json
        one = client.simulate_get("/v1/models/chat").json
        slash = client.simulate_get("/v1/models/all-MiniLM-L6-v2")
    ids = {m["id"] for m in listing["data"]}
    assert listing["object"] == "list"
    assert {"qwen3:4b", "LLM", "chat", "all-MiniLM-L6-v2"} <= ids
    assert one == {**one, "id": "chat", "object": "model", "root": "qwen3:4b"}
    assert slash.status_code == 200


def test_ready_reflects_backend_probes(ollama_a: StandinServer, ollama_b: StandinServer) -> None:
    ollama_b.stop()
    with client_for(gateway_config([{"name": "qwen3:4b", "engine": "ollama"}],
                                   ollama=[ollama_a.url, ollama_b.url])) as (client, gw):
        gw.prober.probe_all()
        ready = client.simulate_get("/health/ready")
        assert ready.status_code == 200
        assert ready.json["backends"][ollama_a.url]["up"] is True
        assert ready.json["backends"][ollama_b.url]["up"] is False
        ollama_a.stop()
        gw.prober.probe_all()
        assert client.simulate_get("/health/ready").status_code == 503


def test_metrics_count_requests_failures_and_backends(ollama_a: StandinServer, ollama_b: StandinServer) -> None:
    ollama_a.stop()
    doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[ollama_a.url, ollama_b.url])
    with client_for(doc) as (client, gw):
        client.simulate_post("/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER})
        gw.prober.probe_all()
        text = client.simulate_get("/metrics").text
    assert 'vilms_requests_total{route="/v1/chat/completions",status="200"} 1.0' in text
    assert f'vilms_upstream_failures_total{{endpoint="{ollama_a.url}",reason="connect_error"}} 1.0' in text
    assert f'vilms_backend_up{{endpoint="{ollama_b.url}",engine="ollama"}} 1.0' in text
    assert "vilms_request_duration_seconds_bucket" in text
    assert "vilms_embedding_model_loaded" not in text or "vilms_embedding_model_loaded 0.0" in text
