"""POST /v1/embeddings served three ways: the local engine (real all-MiniLM-L6-v2), a remote
OpenAI-compatible service, and an engine model of type embedding."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator

import numpy as np
import pytest

from gateway.embeddings_local import LocalEmbedder, resolve_model_source
from tests.gateway_harness import client_for, gateway_config
from tests.standins.fixtures import StandinServer

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def local_embedder() -> Iterator[LocalEmbedder]:
    embedder = LocalEmbedder(MINILM, device="cpu")
    yield embedder
    embedder.close()


def decode(b64: str) -> list[float]:
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_local_embeddings_match_sentence_transformers(local_embedder: LocalEmbedder) -> None:
    from sentence_transformers import SentenceTransformer

    doc = gateway_config([], embedding={"enabled": True, "model": MINILM, "aliases": ["Embedding"]})
    texts = ["a cat on a mat", "edge inference on a Jetson"]
    with client_for(doc, embedder=local_embedder) as (client, gw):
        resp = client.simulate_post("/v1/embeddings", json={"model": "Embedding", "input": texts})
        loaded = gw.metrics.render().decode()
    assert resp.status_code == 200, resp.text
    body = resp.json
    assert body["model"] == "Embedding" and body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1]
    vectors = np.array([d["embedding"] for d in body["data"]])
    assert vectors.shape == (2, 384)
    direct = SentenceTransformer(resolve_model_source(MINILM), device="cpu").encode(texts)
    assert np.allclose(vectors, direct, atol=1e-6)
    assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"]
    assert "vilms_embedding_model_loaded 1.0" in loaded


def test_base64_encoding_is_little_endian_float32(local_embedder: LocalEmbedder) -> None:
    doc = gateway_config([], embedding={"enabled": True, "model": MINILM})
    with client_for(doc, embedder=local_embedder) as (client, _):
        floats = client.simulate_post("/v1/embeddings", json={"model": MINILM, "input": "hello"}).json
        b64 = client.simulate_post("/v1/embeddings",
                                   json={"model": MINILM, "input": "hello", "encoding_format": "base64"}).json
    assert np.allclose(decode(b64["data"][0]["embedding"]), floats["data"][0]["embedding"], atol=1e-7)


@pytest.mark.parametrize(
    "body",
    [{"model": MINILM}, {"model": MINILM, "input": []}, {"model": MINILM, "input": [1, 2]},
     {"model": MINILM, "input": ""}, {"model": MINILM, "input": "x", "encoding_format": "int8"}, {"input": "x"}],
)
def test_bad_embedding_requests_are_400(local_embedder: LocalEmbedder, body: dict) -> None:
    doc = gateway_config([], embedding={"enabled": True, "model": MINILM})
    with client_for(doc, embedder=local_embedder) as (c, _):
        resp = c.simulate_post("/v1/embeddings", json=body)
    assert resp.status_code == 400
    assert resp.json["error"]["type"] == "invalid_request_error"


def test_remote_embedding_service(vllm_qwen: StandinServer) -> None:
    remote = StandinServer.vllm(model="BAAI/bge-m3", name="emb", embedding_dim=1024)
    try:
        doc = gateway_config([], embedding={"enabled": True, "model": "BAAI/bge-m3",
                                            "base-url": remote.url + "/v1/embeddings"})
        with client_for(doc) as (client, _):
            resp = client.simulate_post("/v1/embeddings", json={"model": "BAAI/bge-m3", "input": ["a", "b", "c"]})
        assert resp.status_code == 200, resp.text
        assert len(resp.json["data"]) == 3 and len(resp.json["data"][0]["embedding"]) == 1024
        assert remote.bodies("/v1/embeddings")[0]["input"] == ["a", "b", "c"]
    finally:
        remote.close()


def test_engine_embedding_model_with_host_failover(ollama_a: StandinServer, ollama_b: StandinServer) -> None:
    ollama_a.stop()
    doc = gateway_config([{"name": "nomic-embed-text", "type": "embedding", "engine": "ollama", "aliases": ["emb"]}],
                         ollama=[ollama_a.url, ollama_b.url])
    with client_for(doc) as (client, _):
        resp = client.simulate_post("/v1/embeddings",
                                    json={"model": "emb", "input": "hi", "encoding_format": "base64"})
    assert resp.status_code == 200, resp.text
    assert resp.json["model"] == "emb"
    assert len(decode(resp.json["data"][0]["embedding"])) == 768
    assert ollama_b.bodies("/v1/embeddings")[0]["model"] == "nomic-embed-text"


def test_unavailable_local_model_is_a_503_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    broken = LocalEmbedder("no-such-org/no-such-model", device="cpu")
    with client_for(gateway_config([], embedding={"enabled": True, "model": "no-such-org/no-such-model"}),
                    embedder=broken) as (client, _):
        resp = client.simulate_post("/v1/embeddings", json={"model": "no-such-org/no-such-model", "input": "hi"})
    assert resp.status_code == 503
    assert "no-such-org/no-such-model" in resp.json["error"]["message"]
