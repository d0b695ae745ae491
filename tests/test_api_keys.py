"""API keys: an old config without keys still serves but says so (start-up warning, ``auth: off`` on
/health/ready); keys in ``gateway.api-key-file`` rotate without a restart, and a broken or emptied
key file never opens the gateway."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from tests.gateway_harness import FakeClock, client_for, gateway_config
from tests.served_gateway import serve
from tests.standins.fixtures import StandinServer

OLD = "sk-old-key-0123456789"
NEW = "sk-new-key-9876543210"
MODELS = [{"name": "qwen3:4b", "engine": "ollama"}]


def status(client: Any, key: str | None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return int(client.simulate_get("/v1/models", headers=headers).status_code)


def write_keys(path: Path, *keys: str) -> None:
    # As Ansible's copy module does it: a new file renamed over the old one.
    staged = path.with_suffix(".new")
    staged.write_text("# Managed by Ansible\n" + "".join(f"{key}\n" for key in keys))
    os.replace(staged, path)


def test_a_config_without_keys_still_serves_but_warns_and_reports_auth_off(
    ollama_a: StandinServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="vilms.gateway"), \
            client_for(gateway_config(MODELS, ollama=[ollama_a.url])) as (client, gateway):
        gateway.prober.probe_all()
        assert status(client, None) == 200
        ready = client.simulate_get("/health/ready")
    assert ready.status_code == 200 and ready.json["auth"] == "off"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("authentication is OFF" in w and "vault_gateway_api_keys" in w for w in warnings), warnings


def test_with_keys_ready_reports_auth_on_and_nothing_is_warned(
    ollama_a: StandinServer, caplog: pytest.LogCaptureFixture
) -> None:
    doc = gateway_config(MODELS, ollama=[ollama_a.url], gateway={"api-keys": [OLD]})
    with caplog.at_level(logging.WARNING, logger="vilms.gateway"), client_for(doc) as (client, gateway):
        gateway.prober.probe_all()
        assert client.simulate_get("/health/ready").json["auth"] == "on"
    assert not [r for r in caplog.records if "authentication is OFF" in r.getMessage()]


def test_the_served_process_warns_on_stderr_when_auth_is_off(ollama_a: StandinServer, tmp_path: Path) -> None:
    with serve(gateway_config(MODELS, ollama=[ollama_a.url]), tmp_path) as served:
        assert "authentication is OFF" in served.stderr()


def test_a_key_is_rotated_in_the_key_file_without_a_restart(ollama_a: StandinServer, tmp_path: Path) -> None:
    key_file = tmp_path / "api-keys"
    write_keys(key_file, OLD)
    clock = FakeClock()
    doc = gateway_config(MODELS, ollama=[ollama_a.url], gateway={"api-key-file": str(key_file)})
    with client_for(doc, clock=clock) as (client, _):
        assert (status(client, OLD), status(client, NEW)) == (200, 401)
        # 1. the new key is added: both work while the clients move over
        write_keys(key_file, OLD, NEW)
        clock.advance(1.5)
        assert (status(client, OLD), status(client, NEW)) == (200, 200)
        # 2. the old key is removed
        write_keys(key_file, NEW)
        clock.advance(1.5)
        assert (status(client, OLD), status(client, NEW)) == (401, 200)
        assert status(client, None) == 401


@pytest.mark.parametrize("breakage", ["emptied", "removed"])
def test_a_broken_key_file_keeps_the_keys_read_before(
    ollama_a: StandinServer, tmp_path: Path, breakage: str, caplog: pytest.LogCaptureFixture
) -> None:
    key_file = tmp_path / "api-keys"
    write_keys(key_file, OLD)
    clock = FakeClock()
    doc = gateway_config(MODELS, ollama=[ollama_a.url], gateway={"api-key-file": str(key_file)})
    with client_for(doc, clock=clock) as (client, _):
        if breakage == "emptied":
            write_keys(key_file)
        else:
            key_file.unlink()
        clock.advance(1.5)
        with caplog.at_level(logging.ERROR, logger="vilms.gateway"):
            assert status(client, None) == 401
            assert status(client, OLD) == 200
        assert any("the keys read before stay in force" in r.getMessage() for r in caplog.records)


def test_a_key_file_empty_from_the_start_refuses_everyone(ollama_a: StandinServer, tmp_path: Path) -> None:
    key_file = tmp_path / "api-keys"
    write_keys(key_file)
    doc = gateway_config(MODELS, ollama=[ollama_a.url], gateway={"api-key-file": str(key_file)})
    with client_for(doc) as (client, gateway):
        gateway.prober.probe_all()
        assert status(client, None) == 401 and status(client, OLD) == 401
        assert client.simulate_get("/health/ready").json["auth"] == "on"
