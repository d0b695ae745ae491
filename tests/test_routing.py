"""Alias resolution and the engine rules, in the old gateway's priority order."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import parse_config
from gateway.errors import ModelNotFound
from gateway.routing import Router

LEGACY = Path(__file__).parent / "data" / "legacy_config.yaml"


def router(doc: dict) -> Router:
    return Router(parse_config(doc))


def test_alias_chains_are_followed_to_the_model() -> None:
    r = router({"serving": {"models": [{"name": "qwen3:4b", "aliases": ["Q"]}]},
                "model-aliases": {"LLM": "Qwen3-4B", "Qwen3-4B": "Q"}})
    route = r.resolve("LLM")
    assert route.alias_chain == ("LLM", "Qwen3-4B", "Q", "qwen3:4b")
    assert route.primary.model.name == "qwen3:4b"


def test_unknown_model_is_a_404_naming_the_models_that_exist() -> None:
    r = router({"serving": {"models": [{"name": "a"}, {"name": "b"}]}})
    with pytest.raises(ModelNotFound) as info:
        r.resolve("gpt-4")
    assert "a, b" in info.value.message
    assert info.value.status == 404


def test_alias_cycle_does_not_hang() -> None:
    r = router({"serving": {"models": [{"name": "m"}]}, "model-aliases": {"X": "Y", "Y": "X"}})
    with pytest.raises(ModelNotFound):
        r.resolve("X")


@pytest.mark.parametrize(
    ("doc", "name", "engine", "reason"),
    [
        ({"serving": {"engine": "ollama", "models": [{"name": "m", "engine": "vllm"}]}}, "m", "ollama",
         "serving.engine is ollama"),
        ({"host": {"platform": "js"}, "serving": {"models": [{"name": "m", "engine": "vllm"}]}}, "m", "ollama",
         "host.platform is jetson"),
        ({"host": {"platform": "cpu"}, "serving": {"models": [{"name": "m"}]}}, "m", "ollama",
         "host.platform is cpu"),
        ({"serving": {"models": [{"name": "m-vl", "engine": "vllm"}]}}, "m-vl", "vllm", "the model's engine is vllm"),
        ({"serving": {"models": [{"name": "m", "type": "vlm"}]}}, "m", "ollama", "the model's type is vlm"),
        ({"serving": {"models": [{"name": "qwen2.5vl:3b"}]}}, "qwen2.5vl:3b", "ollama", "the name contains 'vl'"),
        ({"serving": {"models": [{"name": "m", "aliases": ["VLM"]}]}}, "VLM", "ollama", "the name contains 'vl'"),
        ({"serving": {"models": [{"name": "qwen3:4b"}]}}, "qwen3:4b", "vllm", "default for text models on dgpu"),
    ],
)
def test_engine_rules_in_priority_order(doc: dict, name: str, engine: str, reason: str) -> None:
    target = router(doc).resolve(name).primary
    assert (target.engine, target.reason) == (engine, reason)


def test_endpoints_in_order_with_extra_hosts_and_old_alternates() -> None:
    r = router({"serving": {
        "ollama-base-url": "http://localhost:11434/v1/chat/completions",
        "ollama-hosts": ["http://10.0.0.5:11434"],
        "models": [{"name": "m", "engine": "ollama"}],
    }})
    assert r.resolve("m").primary.endpoints == (
        "http://localhost:11434", "http://10.0.0.5:11434", "http://vilms-ollama:11434",
    )


def test_vllm_url_template_gives_one_base_url_per_model() -> None:
    r = router({"serving": {
        "vllm-base-url": "http://vilms-vllm-{slug}:{port}/v1",
        "alternate-hosts": False,
        "models": [{"name": "Qwen/Qwen3-4B", "engine": "vllm", "port": 8001}],
    }})
    assert r.resolve("Qwen/Qwen3-4B").primary.endpoints == ("http://vilms-vllm-qwen-qwen3-4b:8001",)


def test_per_model_base_url_overrides_engine_defaults() -> None:
    r = router({"serving": {"models": [
        {"name": "m", "engine": "vllm", "base-url": "http://gpu1:8001", "hosts": ["http://gpu2:8001"]}
    ]}})
    assert r.resolve("m").primary.endpoints == ("http://gpu1:8001", "http://gpu2:8001")


def test_fallback_chain_crosses_models_and_engines_without_cycles() -> None:
    r = router({"serving": {"models": [
        {"name": "big-vl", "engine": "vllm", "fallback": ["VLM_SMALL"]},
        {"name": "small", "engine": "ollama", "aliases": ["VLM_SMALL"], "fallback": ["big-vl"]},
    ]}, "model-aliases": {"VLM_QWEN3": "big-vl"}})
    targets = r.resolve("VLM_QWEN3").targets
    assert [(t.model.name, t.engine) for t in targets] == [("big-vl", "vllm"), ("small", "ollama")]


def test_embedding_model_and_aliases_resolve_to_the_embedding_section() -> None:
    r = router({"embedding": {"enabled": True, "model": "all-MiniLM-L6-v2", "aliases": ["Embedding"]}})
    assert r.resolve("Embedding").local_embedding
    assert r.resolve("all-MiniLM-L6-v2").local_embedding


def test_route_command_explains_each_hop(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "--config", str(LEGACY), "VLM"]) == 0
    out = capsys.readouterr().out
    assert "VLM -> Qwen3VL-4B-Instruct -> qwen3-vl:4b-instruct" in out
    assert "on ollama (serving.engine is ollama)" in out
    assert "1. http://vilms-ollama:11434" in out
    assert "2. http://localhost:11434" in out


def test_route_command_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "--config", str(LEGACY), "nope"]) == 1
    assert "does not exist" in capsys.readouterr().err
