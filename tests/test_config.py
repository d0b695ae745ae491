"""The config file: the old gateway's format accepted unchanged, new keys, and errors with key paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.config import ConfigError, load_config, parse_config

LEGACY = Path(__file__).parent / "data" / "legacy_config.yaml"


def test_old_gateway_config_is_accepted_unchanged() -> None:
    config = load_config(LEGACY)
    assert config.platform == "dgpu"
    assert config.forced_engine == "ollama"
    assert [m.name for m in config.models] == ["qwen3:4b-instruct", "qwen3-vl:4b-instruct", "llava-phi3"]
    vl = config.models[1]
    assert vl.max_frames == 8
    assert dict(vl.params) == {"temperature": 0.7, "max_tokens": 1024, "stream": False}
    assert config.embedding.enabled and config.embedding.model == "Qwen/Qwen3-Embedding-4B"
    assert config.aliases["LLM"] == "Qwen3-4B-Instruct"
    assert config.warnings == ()


def test_validate_command_accepts_the_old_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--config", str(LEGACY)]) == 0
    assert "OK (3 models" in capsys.readouterr().out


def test_validate_reports_every_problem_with_its_key_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load(LEGACY.read_text())
    doc["serving"]["models"].append({"name": "x", "engine": "olama"})
    doc["serving"]["default-max-frames"] = "eight"
    doc["gateway"] = {"port": 70000, "treads": 4}
    bad = tmp_path / "config.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert main(["validate", "--config", str(bad)]) != 0
    err = capsys.readouterr().err
    assert "serving.models[3].engine: unallowed value 'olama'" in err
    assert "serving.default-max-frames: must be of integer type" in err
    assert "gateway.port: max value is 65535" in err
    assert "gateway.treads: unknown key" in err


def test_yaml_syntax_error_is_reported_not_raised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text("serving:\n  models: [\n")
    assert main(["validate", "--config", str(bad)]) != 0
    assert "not valid YAML" in capsys.readouterr().err


def test_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--config", str(tmp_path / "nope.yaml")]) != 0
    assert "cannot read file" in capsys.readouterr().err


def test_legacy_upper_case_keys_map_onto_the_current_ones() -> None:
    config = parse_config({
        "ENGINE": "ollama",
        "BASE_URL": "http://box:11434/v1",
        "MODELS": [{"name": "m", "params": {"max-tokens": 5}}],
        "MODEL_ALIASES": {"A": "m"},
        "HOST_PLATFORM": "js",
    })
    assert config.forced_engine == "ollama"
    assert config.ollama_urls == ("http://box:11434/v1",)
    assert config.models[0].params["max_tokens"] == 5
    assert config.aliases == {"A": "m"}
    assert config.platform == "jetson"


def test_unknown_keys_in_old_sections_warn_but_do_not_fail() -> None:
    config = parse_config({"serving": {"models": [{"name": "m", "quantisation": "q4"}]}, "extra": 1})
    assert "serving.models[0].quantisation: unknown key (ignored)" in config.warnings
    assert "extra: unknown key (ignored)" in config.warnings


def test_params_must_be_one_key_mappings() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"serving": {"models": [{"name": "m", "params": [{"a": 1, "b": 2}]}]}})
    assert "serving.models[0].params" in info.value.problems[0]


def test_semantic_checks_duplicates_and_dangling_fallbacks() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"serving": {"models": [
            {"name": "m", "fallback": ["ghost"]},
            {"name": "m"},
        ]}})
    problems = "\n".join(info.value.problems)
    assert "serving.models[1].name: duplicate" in problems
    assert "'ghost' is not a model or alias" in problems


def test_vllm_url_template_with_unknown_field_is_rejected() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"serving": {"vllm-base-url": "http://vllm-{modle}:8000", "models": []}})
    assert "unknown field {modle}" in info.value.problems[0]


def test_new_gateway_section_is_parsed() -> None:
    config = parse_config({"gateway": {"threads": 4, "api-keys": ["k" * 16], "request-deadline": 7}})
    assert config.service.threads == 4
    assert config.service.inflight_limit == 3  # one thread stays free for health checks
    assert config.service.api_keys == ("k" * 16,)
    assert config.service.request_deadline == 7
