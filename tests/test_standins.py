"""The Ollama and vLLM stand-ins speak the real wire formats.

Checked with httpx (raw bytes, headers, status codes) and with the official `openai` client, which
is what a user of the appliance points at the gateway.
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
import time
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionContentPartParam, ChatCompletionMessageParam

from tests.standin_helpers import PNG, USER, client_for, sse_events
from tests.standins.fixtures import StandinServer

# ------------------------------------------------------------------------------- Ollama


def test_ollama_discovery_endpoints_match_ollama(ollama: StandinServer) -> None:
    root = httpx.get(ollama.url + "/")
    assert (root.status_code, root.text) == (200, "Ollama is running")
    # The release the stand-in image is built as (the roles' default, past qwen3-vl's 0.12.7).
    assert httpx.get(ollama.url + "/api/version").json() == {"version": "0.13.1"}
    tags = httpx.get(ollama.url + "/api/tags").json()["models"]
    assert {t["name"] for t in tags} == {"qwen3:4b", "qwen3-vl:4b-instruct"}
    tag = next(t for t in tags if t["name"] == "qwen3:4b")
    assert set(tag) == {"name", "model", "modified_at", "size", "digest", "details"}
    assert len(tag["digest"]) == 64 and tag["size"] > 1_000_000
    assert {"format", "family", "parameter_size", "quantization_level"} <= set(tag["details"])
    assert tag["details"]["parameter_size"] == "4.0B"
    listed = client_for(ollama).models.list()
    assert sorted(m.id for m in listed.data) == ["qwen3-vl:4b-instruct", "qwen3:4b"]
    assert {m.owned_by for m in listed.data} == {"library"}


def test_ollama_chat_reflects_routing_and_params(ollama: StandinServer) -> None:
    raw = client_for(ollama).chat.completions.with_raw_response.create(
        model="qwen3:4b", messages=USER, temperature=0.25, max_tokens=64
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "[ollama-a] qwen3:4b: hello there (images: 0)"
    assert reply.system_fingerprint == "fp_ollama" and reply.choices[0].finish_reason == "stop"
    content = reply.choices[0].message.content or ""
    assert reply.usage is not None and reply.usage.completion_tokens == len(content.split())
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert json.loads(raw.headers["x-standin-params"]) == {"max_tokens": 64, "temperature": 0.25}
    path, body = ollama.requests[-1]
    assert path == "/v1/chat/completions" and body["temperature"] == 0.25


@pytest.mark.parametrize("kind", ["ollama", "vllm"])
def test_streamed_chat_with_include_usage(kind: str, ollama: StandinServer, vllm: StandinServer) -> None:
    server, model = (ollama, "qwen3:4b") if kind == "ollama" else (vllm, "qwen3")
    stream = client_for(server).chat.completions.create(
        model=model, messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"[{server.name}] {model}: hello there (images: 0)"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert (
        chunks[-1].choices == []
        and chunks[-1].usage is not None
        and chunks[-1].usage.completion_tokens == len(text.split())
    )
    raw = httpx.post(server.url + "/v1/chat/completions", json={"model": model, "messages": USER, "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["transfer-encoding"] == "chunked"
    events = sse_events(raw.content)
    assert events[-1] == "[DONE]" and all("usage" not in json.loads(e) for e in events[:-1])


def test_stream_chunks_arrive_at_the_pace_they_are_sent() -> None:
    with StandinServer.ollama(chunks=4, chunk_delay=0.15) as server:
        body = {"model": "qwen3:4b", "messages": USER, "stream": True}
        arrivals = []
        start = time.monotonic()
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: {"):
                    arrivals.append(time.monotonic() - start)
        # 4 pieces, 0.15 s apart: they arrive spread over >= 0.45 s, not in one burst at the end.
        assert len(arrivals) >= 4 and arrivals[-1] - arrivals[0] >= 0.4


def test_ollama_native_chat_ndjson_and_non_stream(ollama: StandinServer) -> None:
    body = {
        "model": "qwen3-vl:4b-instruct",
        "messages": [{"role": "user", "content": "look", "images": [PNG]}],
    }
    with httpx.stream("POST", ollama.url + "/api/chat", json=body) as resp:
        assert resp.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in resp.iter_lines() if line]
    assert [x["done"] for x in lines] == [False] * 5 + [True]
    assert "".join(x["message"]["content"] for x in lines) == "[ollama-a] qwen3-vl:4b-instruct: look (images: 1)"
    assert lines[-1]["done_reason"] == "stop" and lines[-1]["eval_count"] > 0
    whole = httpx.post(ollama.url + "/api/chat", json={**body, "stream": False, "options": {"temperature": 0}})
    assert whole.json()["message"]["content"].endswith("look (images: 1)")
    assert json.loads(whole.headers["x-standin-params"]) == {"temperature": 0}
    loaded = httpx.get(ollama.url + "/api/ps").json()["models"]
    assert [m["name"] for m in loaded] == ["qwen3-vl:4b-instruct"] and "expires_at" in loaded[0]


@pytest.mark.parametrize("kind", ["ollama", "vllm"])
def test_embeddings_float_and_base64(kind: str, ollama: StandinServer, vllm: StandinServer) -> None:
    server, model, dim = (ollama, "qwen3:4b", 768) if kind == "ollama" else (vllm, "qwen3", 1024)
    client = client_for(server)
    first = client.embeddings.create(model=model, input=["alpha", "beta"], encoding_format="float")
    again = client.embeddings.create(model=model, input="alpha", encoding_format="float")
    a, b = first.data[0].embedding, first.data[1].embedding
    assert len(a) == dim and a == again.data[0].embedding and a != b
    assert math.isclose(math.sqrt(sum(v * v for v in a)), 1.0, rel_tol=1e-4)
    raw = httpx.post(
        server.url + "/v1/embeddings", json={"model": model, "input": "alpha", "encoding_format": "base64"}
    ).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    decoded = struct.unpack(f"<{dim}f", packed)
    assert all(math.isclose(x, y, abs_tol=1e-6) for x, y in zip(decoded, a, strict=True))
    # The openai client asks for base64 by default and decodes it itself.
    assert client.embeddings.create(model=model, input="alpha").data[0].embedding == pytest.approx(a, abs=1e-6)


def test_ollama_native_embed(ollama: StandinServer) -> None:
    out = httpx.post(ollama.url + "/api/embed", json={"model": "qwen3:4b", "input": ["a", "b", "c"]}).json()
    assert len(out["embeddings"]) == 3 and len(out["embeddings"][0]) == 768 and out["prompt_eval_count"] == 3


def test_pull_streams_progress_then_model_is_listed(ollama: StandinServer) -> None:
    client = client_for(ollama)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gemma3:1b", messages=USER)
    with httpx.stream("POST", ollama.url + "/api/pull", json={"model": "gemma3:1b"}) as resp:
        events = [json.loads(line) for line in resp.iter_lines() if line]
    statuses = [e["status"] for e in events]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layer = [e for e in events if e["status"].startswith("pulling ") and "digest" in e]
    assert layer[0]["status"] == "pulling " + layer[0]["digest"][7:19]
    progress = [e["completed"] for e in layer if e["digest"] == layer[0]["digest"] and "completed" in e]
    assert progress == sorted(progress) and progress[-1] == layer[0]["total"] and len(progress) > 1
    assert "gemma3:1b" in {t["name"] for t in httpx.get(ollama.url + "/api/tags").json()["models"]}
    reply = client.chat.completions.create(model="gemma3:1b", messages=USER)
    assert (reply.choices[0].message.content or "").startswith("[ollama-a] gemma3:1b:")
    quiet = httpx.post(ollama.url + "/api/pull", json={"name": "phi3", "stream": False})
    assert quiet.json() == {"status": "success"}
    assert "phi3:latest" in {m.id for m in client.models.list().data}


def test_pull_of_unknown_model_fails_like_ollama(ollama: StandinServer) -> None:
    body = {"model": "doesnotexist:1b"}
    with httpx.stream("POST", ollama.url + "/api/pull", json=body) as resp:
        events = [json.loads(line) for line in resp.iter_lines() if line]
    assert resp.status_code == 200
    assert events == [{"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}]
    quiet = httpx.post(ollama.url + "/api/pull", json={**body, "stream": False})
    assert quiet.status_code == 500
    assert quiet.json() == {"error": "pull model manifest: file does not exist"}
    assert "doesnotexist:1b" not in {t["name"] for t in httpx.get(ollama.url + "/api/tags").json()["models"]}


@pytest.mark.parametrize("version,refused", [("0.12.6", True), ("0.0.0", True), ("0.12.7", False), ("0.13.1", False)])
def test_qwen3_vl_is_refused_to_an_ollama_older_than_it_needs(version: str, refused: bool) -> None:
    # ollama#12819: 0.12.6 cannot run qwen3-vl; dustynv's builds call themselves 0.0.0.
    with StandinServer.ollama(models=[], engine_version=version) as ollama:
        reply = httpx.post(ollama.url + "/api/pull", json={"model": "qwen3-vl:4b-instruct", "stream": False})
    if refused:
        assert reply.status_code == 500
        assert "requires a newer version of Ollama" in reply.json()["error"]
    else:
        assert reply.json() == {"status": "success"}


def test_a_model_the_version_cannot_run_is_listed_but_fails_to_load() -> None:
    # Its files are there (pulled by a newer Ollama, then the image went back to 0.12.6): the lists
    # show it; loading it fails as ollama#12626 shows: "500 ... unable to load model: <blob path>".
    vl = "qwen3-vl:4b-instruct"
    with StandinServer.ollama(models=["qwen3:4b", vl], engine_version="0.12.6") as ollama:
        assert vl in {t["name"] for t in httpx.get(ollama.url + "/api/tags").json()["models"]}
        assert vl in {m["id"] for m in httpx.get(ollama.url + "/v1/models").json()["data"]}
        native = httpx.post(ollama.url + "/api/chat", json={"model": vl, "messages": USER, "stream": False})
        assert native.status_code == 500
        message = native.json()["error"]
        assert re.fullmatch(r"unable to load model: /root/\.ollama/models/blobs/sha256-[0-9a-f]{64}", message)
        v1 = httpx.post(ollama.url + "/v1/chat/completions", json={"model": vl, "messages": USER})
        assert v1.status_code == 500
        assert v1.json() == {"error": {"message": message, "type": "api_error", "param": None, "code": None}}
        assert httpx.post(ollama.url + "/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER}).is_success


def test_pulled_models_survive_a_restart_and_delete(tmp_path: Path) -> None:
    with StandinServer.ollama(models=[], models_dir=tmp_path) as first:
        assert httpx.post(first.url + "/api/pull", json={"model": "llama3.2", "stream": False}).is_success
    manifest = tmp_path / "manifests/registry.ollama.ai/library/llama3.2/latest"
    assert json.loads(manifest.read_text())["layers"][0]["mediaType"] == "application/vnd.ollama.image.model"
    with StandinServer.ollama(models=[], models_dir=tmp_path) as second:
        assert [t["name"] for t in httpx.get(second.url + "/api/tags").json()["models"]] == ["llama3.2:latest"]
        gone = httpx.request("DELETE", second.url + "/api/delete", json={"model": "llama3.2"})
        assert (gone.status_code, gone.content) == (200, b"")
        again = httpx.request("DELETE", second.url + "/api/delete", json={"model": "llama3.2"})
        assert again.status_code == 404 and again.json() == {"error": "model 'llama3.2' not found"}
    assert not manifest.exists()


def test_ollama_unknown_model_404_shapes(ollama: StandinServer) -> None:
    resp = httpx.post(ollama.url + "/v1/chat/completions", json={"model": "nope:1b", "messages": USER})
    assert resp.status_code == 404
    assert resp.json() == {
        "error": {
            "message": 'model "nope:1b" not found, try pulling it first',
            "type": "api_error",
            "param": None,
            "code": None,
        }
    }
    native = httpx.post(ollama.url + "/api/chat", json={"model": "nope:1b", "messages": USER})
    assert native.status_code == 404
    assert native.json() == {"error": 'model "nope:1b" not found, try pulling it first'}
    with pytest.raises(openai.NotFoundError, match="try pulling it first"):
        client_for(ollama).embeddings.create(model="nope:1b", input="x")
    show = httpx.post(ollama.url + "/api/show", json={"model": "nope:1b"})
    assert show.status_code == 404 and show.json() == {"error": "model 'nope:1b' not found"}


def test_ollama_accepts_only_base64_images(ollama: StandinServer, vllm: StandinServer) -> None:
    def vision(url: str) -> list[ChatCompletionMessageParam]:
        text: ChatCompletionContentPartParam = {"type": "text", "text": "what is it"}
        part: ChatCompletionContentPartParam = {"type": "image_url", "image_url": {"url": url}}
        return [{"role": "user", "content": [text, part, part]}]

    remote = httpx.post(
        ollama.url + "/v1/chat/completions",
        json={"model": "qwen3-vl:4b-instruct", "messages": vision("https://example.com/cat.png")},
    )
    assert remote.status_code == 400
    assert remote.json()["error"] == {
        "message": "invalid image input",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    with pytest.raises(openai.BadRequestError):
        client_for(ollama).chat.completions.create(
            model="qwen3-vl:4b-instruct", messages=vision("https://example.com/cat.png")
        )
    inline = client_for(ollama).chat.completions.create(
        model="qwen3-vl:4b-instruct", messages=vision(f"data:image/png;base64,{PNG}")
    )
    assert inline.choices[0].message.content == "[ollama-a] qwen3-vl:4b-instruct: what is it (images: 2)"
    remote_ok = client_for(vllm).chat.completions.create(model="qwen3", messages=vision("https://example.com/c.png"))
    assert remote_ok.choices[0].message.content == "[vllm-a] qwen3: what is it (images: 2)"


# --------------------------------------------------------------------------------- vLLM


def test_vllm_health_version_and_models(vllm: StandinServer) -> None:
    health = httpx.get(vllm.url + "/health")
    assert (health.status_code, health.content) == (200, b"")
    assert httpx.get(vllm.url + "/version").json()["version"]
    models = httpx.get(vllm.url + "/v1/models").json()
    assert models["object"] == "list" and len(models["data"]) == 1
    entry = models["data"][0]
    assert (entry["id"], entry["owned_by"], entry["root"]) == ("qwen3", "vllm", "Qwen/Qwen3-4B")
    assert entry["max_model_len"] == 4096
    reply = client_for(vllm).chat.completions.create(model="qwen3", messages=USER, max_tokens=16)
    assert reply.choices[0].message.content == "[vllm-a] qwen3: hello there (images: 0)"


def test_vllm_errors_have_vllm_shape(vllm: StandinServer) -> None:
    wrong = httpx.post(vllm.url + "/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER})
    assert wrong.status_code == 404
    assert wrong.json() == {
        "object": "error",
        "message": "The model `qwen3:4b` does not exist.",
        "type": "NotFoundError",
        "param": None,
        "code": 404,
    }
    too_long = httpx.post(
        vllm.url + "/v1/chat/completions", json={"model": "qwen3", "messages": USER, "max_tokens": 5000}
    )
    assert too_long.status_code == 400 and too_long.json()["type"] == "BadRequestError"
    with pytest.raises(openai.NotFoundError):
        client_for(vllm).embeddings.create(model="other", input="x")


def test_vllm_completions_and_api_key() -> None:
    with StandinServer.vllm(model="m", api_key="sekret") as server:
        denied = httpx.post(server.url + "/v1/completions", json={"model": "m", "prompt": "hi"})
        assert denied.status_code == 401
        ok = httpx.post(
            server.url + "/v1/completions",
            json={"model": "m", "prompt": "hi"},
            headers={"Authorization": "Bearer sekret"},
        )
        assert ok.json()["choices"][0]["text"] == "[vllm] m: hi (images: 0)"
        assert httpx.get(server.url + "/health").status_code == 200


# ------------------------------------------------------------------------------- faults
