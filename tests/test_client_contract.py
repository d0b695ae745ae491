"""The strict client contract: a request the gateway refuses gets a 4xx in OpenAI's shape, naming the
parameter, and reaches no engine; a valid OpenAI request, and what the old gateway's clients sent,
still reaches one with its unknown fields intact."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import pytest
import yaml

from gateway.config import ConfigError, parse_config
from gateway.embeddings_local import EmbeddingResult
from tests.gateway_harness import client_for, gateway_config
from tests.image_server import PNG
from tests.standins.fixtures import StandinServer

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]
# The first bytes of real files of each kind (a 1x1 image each; the BMP is built whole below).
JPEG = base64.b64decode("/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////////"
                        "////////////////////////////////////////wgALCAABAAEBAREA/8QAFBABAAAAAAAAAAAAAAAA"
                        "AAAAAP/aAAgBAQABPxA=")
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
WEBP = base64.b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")
BMP = (b"BM" + struct.pack("<IHHI", 58, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 1, 1, 1, 24, 0, 4, 2835, 2835, 0, 0)
       + b"\x00\x00\xff\x00")
TIFF = b"II*\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00"  # little-endian header, first IFD at 8 (empty)


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[StandinServer, StandinServer]]:
    with StandinServer.ollama(models=["qwen3:4b", "qwen2.5vl:3b", "nomic-embed-text"], name="ollama") as ollama, \
            StandinServer.vllm(model="Qwen/Qwen3-4B", name="vllm") as vllm:
        yield ollama, vllm


@pytest.fixture
def fresh(engines: tuple[StandinServer, StandinServer]) -> tuple[StandinServer, StandinServer]:
    """The engines, with empty request logs."""
    for engine in engines:
        engine.reset()
    return engines


@pytest.fixture
def client(fresh: tuple[StandinServer, StandinServer]) -> Iterator[falcon.testing.TestClient]:
    ollama, vllm = fresh
    models = [{"name": "qwen3:4b", "engine": "ollama"}, {"name": "qwen2.5vl:3b", "engine": "ollama", "type": "vlm"},
              {"name": "Qwen/Qwen3-4B", "engine": "vllm"},
              {"name": "nomic-embed-text", "engine": "ollama", "type": "embedding"}]
    with client_for(gateway_config(models, ollama=[ollama.url], vllm=[vllm.url])) as (test_client, _):
        yield test_client


def forwarded(engines: tuple[StandinServer, StandinServer]) -> list[tuple[str, Any]]:
    return [request for engine in engines for request in engine.requests]


def refused(resp: falcon.testing.Result, status: int = 400) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error = resp.json["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    return dict(error)


def chat(model: str = "qwen3:4b", **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": USER, **fields}


# -- Content-Type ---------------------------------------------------------------------------------
@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "application/xml", "application/x-ndjson",
    "multipart/form-data; boundary=x", "text/json",
])
@pytest.mark.parametrize("path", [CHAT, "/v1/embeddings"])
def test_a_body_that_is_not_declared_json_is_a_415_and_reaches_no_engine(
    client: falcon.testing.TestClient, engines: tuple[StandinServer, StandinServer], content_type: str, path: str
) -> None:
    body = json.dumps(chat() if path == CHAT else {"model": "nomic-embed-text", "input": "hi"})
    resp = client.simulate_post(path, body=body, headers={"Content-Type": content_type})
    assert "send application/json" in refused(resp, 415)["message"]
    assert forwarded(engines) == []


@pytest.mark.parametrize("content_type", [
    None, "application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8",
    "application/vnd.api+json",
])
def test_json_content_types_and_none_at_all_are_served(
    client: falcon.testing.TestClient, engines: tuple[StandinServer, StandinServer], content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    resp = client.simulate_post(CHAT, body=json.dumps(chat()), headers=headers)
    assert resp.status_code == 200, resp.text
    assert len(engines[0].bodies(CHAT)) == 1


def test_the_content_type_check_leaves_unknown_routes_404_and_wrong_methods_405(
    client: falcon.testing.TestClient,
) -> None:
    plain = {"Content-Type": "text/plain"}
    assert refused(client.simulate_post("/v1/completions-typo", body="x", headers=plain), 404)
    assert refused(client.simulate_post("/health", body="x", headers=plain), 405)


# -- NaN and Infinity -----------------------------------------------------------------------------
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_nan_and_infinity_are_a_400_and_reach_no_engine(
    client: falcon.testing.TestClient, engines: tuple[StandinServer, StandinServer], literal: str
) -> None:
    start = '{"model": "qwen3:4b", "messages": [{"role": "user", "content": "hi"}]'
    for body in (f'{start}, "temperature": {literal}}}', f'{start}, "top_k": {literal}}}'):
        resp = client.simulate_post(CHAT, body=body, headers={"Content-Type": "application/json"})
        assert "not valid JSON" in refused(resp)["message"]
    assert forwarded(engines) == []


# -- content parts --------------------------------------------------------------------------------
def _second_message(*parts: Any) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": list(parts)}]


@pytest.mark.parametrize(("part", "param"), [
    ({"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}}, "messages[1].content[0].type"),
    ({"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}}, "messages[1].content[0].type"),
    ({"type": "input_text", "text": "hi"}, "messages[1].content[0].type"),
    ({"type": "TEXT", "text": "hi"}, "messages[1].content[0].type"),
    ({"type": "text", "text": 5}, "messages[1].content[0].text"),
    ({"type": "text", "text": ["a"]}, "messages[1].content[0].text"),
    ({"type": "text"}, "messages[1].content[0].text"),
    ({"type": "refusal", "refusal": None}, "messages[1].content[0].refusal"),
    ({"type": "input_audio", "input_audio": "UklGRg=="}, "messages[1].content[0].input_audio"),
])
def test_unknown_part_types_and_non_string_text_are_a_400_naming_the_part(
    client: falcon.testing.TestClient, engines: tuple[StandinServer, StandinServer], part: dict[str, Any],
    param: str,
) -> None:
    resp = client.simulate_post(CHAT, json=chat("Qwen/Qwen3-4B", messages=_second_message(part)))
    assert refused(resp)["param"] == param
    assert forwarded(engines) == []


def test_openai_part_types_an_engine_reads_are_forwarded_as_sent(
    client: falcon.testing.TestClient, engines: tuple[StandinServer, StandinServer],
) -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "what is said?"},
                                     {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot say."}]},
        {"role": "user", "content": [{"type": "text", "text": "try again"},
                                     {"type": "image_url", "image_url": _data("image/png", PNG)}]},
    ]
    # A data URL, given as a plain string: remote URLs are fetched and inlined by the gateway for every
    # engine (test_image_networks.py), so only a data URL reaches the engine exactly as the client sent it.
    resp = client.simulate_post(CHAT, json=chat("Qwen/Qwen3-4B", messages=messages))
    assert resp.status_code == 200, resp.text
    assert engines[1].bodies(CHAT)[0]["messages"] == messages


# -- numeric parameters ---------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "value"), [
    ("max_tokens", 0), ("max_tokens", -5), ("max_completion_tokens", 0), ("n", 0), ("n", -1),
    ("temperature", -0.01), ("temperature", 2.5), ("top_p", 1.01), ("top_p", -1),
    ("presence_penalty", 2.5), ("frequency_penalty", -3),
    ("temperature", "0.7"), ("top_p", [1]), ("max_tokens", True), ("max_tokens", "100"), ("max_tokens", 10.5),
    ("n", 1.5), ("max_completion_tokens", False),
])
def test_numeric_parameters_out_of_range_or_of_the_wrong_type_are_a_400_naming_them(
    client: falcon.testing.TestClient, engines: tuple[StandinServer, StandinServer], key: str, value: Any
) -> None:
    resp = client.simulate_post(CHAT, json=chat(**{key: value}))
    assert refused(resp)["param"] == key
    assert forwarded(engines) == []


def test_valid_edges_nulls_and_unknown_fields_reach_the_engine(
    client: falcon.testing.TestClient, engines: tuple[StandinServer, StandinServer],
) -> None:
    bodies = [
        chat(temperature=0, top_p=0, n=1, max_tokens=1, presence_penalty=-2, frequency_penalty=2),
        chat(temperature=2, top_p=1, max_completion_tokens=64),
        # The old gateway's clients: explicit nulls for what they do not set.
        chat(temperature=None, max_tokens=None, top_p=None, n=None, stream=None, stop=None),
        chat(max_tokens=100.0),
        chat(top_k=40, min_p=0.05, repeat_penalty=1.1, x_vendor={"a": [1]}),
    ]
    for body in bodies:
        resp = client.simulate_post(CHAT, json=body)
        assert resp.status_code == 200, (body, resp.text)
    sent = engines[0].bodies(CHAT)
    assert len(sent) == len(bodies)
    assert sent[0]["temperature"] == 0 and sent[0]["n"] == 1
    assert "stream" not in sent[2] and sent[2]["max_tokens"] is None
    assert sent[3]["max_tokens"] == 100 and isinstance(sent[3]["max_tokens"], int)  # Go's int refuses 100.0
    assert sent[4]["top_k"] == 40 and sent[4]["min_p"] == 0.05 and sent[4]["x_vendor"] == {"a": [1]}


# -- data: image URLs -----------------------------------------------------------------------------
def _vision(url: str, model: str = "qwen2.5vl:3b") -> dict[str, Any]:
    return chat(model, messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url, "detail": "low"}}]}])


def _data(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


@pytest.mark.parametrize(("url", "needle"), [
    (_data("image/png", JPEG), "holds JPEG data"),
    (_data("image/jpeg", PNG), "holds PNG data"),
    (_data("image/webp", b"RIFF\x24\x00\x00\x00WAVEfmt "), "not image data"),
    (_data("image/png", bytes(range(7, 200))), "not image data"),
    (_data("image/bmp", b"BM" + bytes(range(7, 200))), "not image data"),
    (_data("image/gif", b""), "not image data"),
    ("data:image/png;base64,!!!not-base64!!!", "valid base64"),
    ("data:image/png;base64," + base64.b64encode(PNG).decode()[:-3], "valid base64"),
    ("data:image/png," + PNG.hex(), "data:image/<type>;base64"),
    (_data("image/heic", PNG), "not accepted"),
    (_data("text/plain", b"hello"), "data:image/<type>;base64"),
])
def test_a_data_url_that_is_not_the_image_it_claims_is_a_400(
    client: falcon.testing.TestClient, engines: tuple[StandinServer, StandinServer], url: str, needle: str
) -> None:
    error = refused(client.simulate_post(CHAT, json=_vision(url)))
    assert needle in error["message"] and error["param"] == "messages[0].content[1].image_url"
    assert forwarded(engines) == []


@pytest.mark.parametrize(("media_type", "data"), [
    ("image/png", PNG), ("image/jpeg", JPEG), ("image/jpg", JPEG), ("IMAGE/PNG", PNG), ("image/gif", GIF),
    ("image/webp", WEBP), ("image/bmp", BMP), ("image/tiff", TIFF),
])
def test_data_urls_of_the_type_they_claim_reach_the_engine_unchanged(
    client: falcon.testing.TestClient, engines: tuple[StandinServer, StandinServer], media_type: str, data: bytes
) -> None:
    url = _data(media_type, data)
    # On vLLM, which opens any of them with PIL; Ollama takes only jpeg, jpg, png and webp data URLs.
    resp = client.simulate_post(CHAT, json=_vision(url, "Qwen/Qwen3-4B"))
    assert resp.status_code == 200, resp.text
    assert engines[1].bodies(CHAT)[0]["messages"][0]["content"][1]["image_url"] == {"url": url, "detail": "low"}


# -- /v1/embeddings names -------------------------------------------------------------------------
class RecordingEmbedder:
    """Stands in for the local sentence-transformers engine: records what it was asked to embed."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    @property
    def loaded(self) -> bool:
        return bool(self.calls)

    def embed(self, texts: list[str]) -> EmbeddingResult:
        self.calls.append(list(texts))
        return EmbeddingResult([[0.5, 0.25, 0.125] for _ in texts], prompt_tokens=len(texts))

    def close(self) -> None:
        pass


def _embeddings_doc(ollama: StandinServer, **section: Any) -> dict[str, Any]:
    return gateway_config([{"name": "qwen3:4b", "engine": "ollama"},
                           {"name": "nomic-embed-text", "engine": "ollama", "type": "embedding", "aliases": ["nomic"]}],
                          ollama=[ollama.url], aliases={"vectors": "minilm"},
                          embedding={"enabled": True, "model": "minilm", "aliases": ["Embedding"], **section})


@pytest.mark.parametrize("name", ["text-embedding-3-small", "qwen3:4b", "Embeddings", "nomic-embed"])
def test_embeddings_for_a_name_that_is_no_embedding_model_is_a_404(
    fresh: tuple[StandinServer, StandinServer], name: str
) -> None:
    engines = fresh
    local = RecordingEmbedder()
    with client_for(_embeddings_doc(engines[0]), embedder=local) as (client, _):
        error = refused(client.simulate_post("/v1/embeddings", json={"model": name, "input": "hi"}), 404)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "minilm" in error["message"] and "nomic-embed-text" in error["message"]
    assert local.calls == [] and forwarded(engines) == []


def test_embeddings_answer_the_section_model_its_aliases_and_engine_embedding_models(
    fresh: tuple[StandinServer, StandinServer],
) -> None:
    engines = fresh
    local = RecordingEmbedder()
    with client_for(_embeddings_doc(engines[0]), embedder=local) as (client, _):
        answers = {name: client.simulate_post("/v1/embeddings", json={"model": name, "input": name})
                   for name in ("minilm", "Embedding", "vectors", "nomic", "nomic-embed-text")}
    assert {name: resp.status_code for name, resp in answers.items()} == dict.fromkeys(answers, 200)
    assert local.calls == [["minilm"], ["Embedding"], ["vectors"]]
    assert [body["input"] for body in engines[0].bodies("/v1/embeddings")] == [["nomic"], ["nomic-embed-text"]]


def test_embedding_catch_all_keeps_the_old_gateways_any_name(fresh: tuple[StandinServer, StandinServer]) -> None:
    engines = fresh
    local = RecordingEmbedder()
    with client_for(_embeddings_doc(engines[0], **{"catch-all": True}), embedder=local) as (client, _):
        other = client.simulate_post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "a"})
        engine = client.simulate_post("/v1/embeddings", json={"model": "nomic", "input": "b"})
    assert other.status_code == 200 and other.json["model"] == "text-embedding-3-small"
    assert engine.status_code == 200 and len(engine.json["data"][0]["embedding"]) == 768
    assert local.calls == [["a"]]


def test_the_legacy_config_answers_its_embedding_names_and_no_others() -> None:
    local = RecordingEmbedder()
    with client_for(_legacy_document(), embedder=local) as (client, _):
        statuses = {name: client.simulate_post("/v1/embeddings", json={"model": name, "input": "x"}).status_code
                    for name in ("Embedding", "embedding", "Embbeding", "Qwen3-Embedding-4B", "qwen3-embedding-4b",
                                 "Qwen/Qwen3-Embedding-4B", "LLM", "qwen3:4b-instruct", "all-MiniLM-L6-v2")}
    assert statuses == {"Embedding": 200, "embedding": 200, "Embbeding": 200, "Qwen3-Embedding-4B": 200,
                        "qwen3-embedding-4b": 200, "Qwen/Qwen3-Embedding-4B": 200, "LLM": 404,
                        "qwen3:4b-instruct": 404, "all-MiniLM-L6-v2": 404}
    assert len(local.calls) == 6


def _legacy_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((Path(__file__).parent / "data" / "legacy_config.yaml").read_text())
    return document


def test_with_the_section_disabled_an_unknown_name_is_a_404_beside_engine_embedding_models(
    fresh: tuple[StandinServer, StandinServer],
) -> None:
    doc = gateway_config([{"name": "nomic-embed-text", "engine": "ollama", "type": "embedding"}],
                         ollama=[fresh[0].url], embedding={"enabled": False, "model": "minilm"})
    with client_for(doc) as (client, _):
        unknown = client.simulate_post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"})
        section = client.simulate_post("/v1/embeddings", json={"model": "minilm", "input": "x"})
    assert "nomic-embed-text" in refused(unknown, 404)["message"]
    assert refused(section, 404)["code"] == "model_not_found"
    assert forwarded(fresh) == []


def test_embedding_catch_all_is_off_by_default_and_must_be_a_boolean() -> None:
    assert parse_config(gateway_config([], embedding={"enabled": True})).embedding.catch_all is False
    assert parse_config(gateway_config([], embedding={"catch-all": True})).embedding.catch_all is True
    with pytest.raises(ConfigError) as info:
        parse_config(gateway_config([], embedding={"catch-all": "yes"}))
    assert "embedding.catch-all" in str(info.value)
