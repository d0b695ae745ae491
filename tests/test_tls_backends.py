"""Engines behind TLS, signed by the site's own CA, as a served gateway sees them.

The box trusts a site CA through its system store; ``SSL_CERT_FILE`` plays that store here. Probes
and engine calls must trust the same store: a probe that used another bundle reported a working
engine down and the box not ready. An engine whose certificate the box does not trust is never
talked to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway import tls
from tests.gateway_harness import gateway_config
from tests.private_ca import issue
from tests.served_gateway import free_port, launch, openai_error, stop, wait_until
from tests.standins.fixtures import StandinServer

CHAT = {"model": "qwen3:4b", "messages": [{"role": "user", "content": "hello"}]}


def _config(backend: StandinServer) -> dict[str, Any]:
    return gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[backend.url],
                          gateway={"probe-interval": 60})


def _probed(url: str, engine: str) -> bool:
    return httpx.get(url + "/health/ready", timeout=5).json()["backends"][engine]["up"] is not None


def test_an_engine_signed_by_the_site_ca_is_probed_up_and_answers_plain_and_streamed(tmp_path: Path) -> None:
    site = issue(tmp_path)
    with StandinServer.ollama(models=["qwen3:4b"], tls=site.server_context()) as backend:
        assert backend.url.startswith("https://")
        served = launch(_config(backend), tmp_path, free_port(), threads=4, env={"SSL_CERT_FILE": str(site.ca_file)})
        try:
            ready = httpx.get(served.url + "/health/ready", timeout=5)
            plain = httpx.post(served.url + "/v1/chat/completions", json=CHAT, timeout=10)
            with httpx.stream("POST", served.url + "/v1/chat/completions", json={**CHAT, "stream": True},
                              timeout=10) as resp:
                events = [line for line in resp.iter_lines() if line.startswith("data: ")]
        finally:
            stop(served)
    assert ready.status_code == 200, ready.text
    assert ready.json()["backends"][backend.url]["up"] is True
    assert plain.status_code == 200 and plain.json()["choices"][0]["message"]["content"]
    assert len(events) > 2 and events[-1] == "data: [DONE]"


def test_an_engine_with_an_untrusted_certificate_is_reported_down_and_never_sent_a_prompt(tmp_path: Path) -> None:
    site = issue(tmp_path)  # the engine's CA, which this box does not trust
    with StandinServer.ollama(models=["qwen3:4b"], tls=site.server_context()) as backend:
        served = launch(_config(backend), tmp_path, free_port(), threads=4, env={"SSL_CERT_FILE": "/nonexistent"},
                        wait_for="/health")
        try:
            assert wait_until(lambda: _probed(served.url, backend.url), 10)
            ready = httpx.get(served.url + "/health/ready", timeout=5)
            answer = httpx.post(served.url + "/v1/chat/completions", json=CHAT, timeout=10)
        finally:
            stop(served)
        prompts = backend.bodies("/v1/chat/completions") + backend.bodies("/api/chat")
    assert ready.status_code == 503
    detail = ready.json()["backends"][backend.url]["detail"]
    assert "ConnectError" in detail, detail
    assert answer.status_code in (502, 503) and openai_error(answer)["type"]
    assert prompts == []


def test_the_context_of_a_plain_http_client_refuses_every_certificate(tmp_path: Path) -> None:
    """Clients bound to http:// engines get a context with no CA, to spare loading the bundle; if
    one were ever pointed at TLS, it must fail closed, not trust blindly."""
    site = issue(tmp_path)
    with StandinServer.ollama(models=["qwen3:4b"], tls=site.server_context()) as backend, \
            httpx.Client(verify=tls.for_base_url("http://127.0.0.1:11434"), trust_env=False) as client, \
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        client.get(backend.url + "/api/version")
