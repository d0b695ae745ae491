"""The capacity model: with nothing set, one gateway carries a crowd of LLM streams, a queue behind
them, and keeps a thread for /health; the Ansible role's defaults are the gateway's own."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.config import ConfigError, ServiceSettings, parse_config

ROOT = Path(__file__).resolve().parents[1]


def test_with_nothing_set_the_gateway_carries_a_thousand_streams_and_queues_more() -> None:
    service = parse_config({}).service
    assert service.inflight_limit >= 1000  # every open stream holds a slot and a thread
    assert service.queue_limit > 0 and service.queue_timeout > 0
    # Queued requests wait on a thread each; at least one thread is left for /health.
    assert service.request_threads > service.inflight_limit + service.queue_limit
    # Idle and dripping clients are bounded, and thousands of them fit under the connection limit.
    assert service.connection_limit >= 3000  # 1,000 streams and 2,000 idle clients
    assert 0 < service.header_timeout <= 30 and 0 < service.idle_timeout <= 300


def test_an_old_config_that_sets_only_threads_keeps_a_thread_for_health() -> None:
    service = parse_config({"gateway": {"threads": 4}}).service
    assert (service.request_threads, service.inflight_limit, service.queue_limit) == (4, 3, 0)
    service = parse_config({"gateway": {"threads": 21}}).service
    assert service.inflight_limit + service.queue_limit == 20 and service.queue_limit == 5


def test_threads_too_few_for_the_slots_and_queue_is_a_config_error_naming_the_sum() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"gateway": {"threads": 8, "max-inflight": 6, "queue-size": 4}})
    assert any("gateway.threads: 8" in p and "= 11" in p for p in error.value.problems), error.value.problems


def test_new_capacity_keys_are_parsed() -> None:
    service = parse_config({"gateway": {"max-inflight": 10, "queue-size": 5, "queue-timeout": 2.5,
                                        "idle-timeout": 15, "header-timeout": 3}}).service
    assert (service.inflight_limit, service.queue_limit, service.request_threads) == (10, 5, 31)
    assert (service.queue_timeout, service.idle_timeout, service.header_timeout) == (2.5, 15, 3)
    with pytest.raises(ConfigError):
        parse_config({"gateway": {"queue-size": -1}})


def test_the_roles_defaults_are_the_gateways() -> None:
    role = yaml.safe_load((ROOT / "roles/gateway/defaults/main.yml").read_text())
    service = ServiceSettings()
    assert role["gateway_max_inflight"] == service.inflight_limit
    assert role["gateway_queue_size"] == service.queue_limit
    assert role["gateway_queue_timeout"] == service.queue_timeout
    assert role["gateway_threads"] == 0 and service.threads is None  # both: sized from the two above
    assert role["gateway_connection_limit"] == service.connection_limit
    assert role["gateway_idle_timeout"] == service.idle_timeout
    assert role["gateway_header_timeout"] == service.header_timeout
    # The unit's descriptor limit covers every client connection and an engine connection per slot.
    assert role["gateway_limit_nofile"] > service.connection_limit + service.inflight_limit
    unit = (ROOT / "roles/gateway/templates/vilms-gateway.service.j2").read_text()
    assert "LimitNOFILE={{ gateway_limit_nofile }}" in unit
    for group in ("cpu", "dgpu", "jetson"):
        overrides = yaml.safe_load((ROOT / f"inventory/group_vars/{group}.yml").read_text()) or {}
        assert "gateway_threads" not in overrides, f"{group}.yml sizes the threads apart from the slots"
