"""The Ollama and vLLM stand-ins speak the real wire formats, and their faults behave as documented.

Checked with httpx (raw bytes, headers, status codes) and with the official `openai` client, which
is what a user of the appliance points at the gateway.
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionContentPartParam, ChatCompletionMessageParam

from tests.standins.fixtures import StandinServer
from tests.standins.ollama import parse_ollama_host

STANDINS = Path(__file__).parent / "standins"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def ollama() -> Iterator[StandinServer]:
    with StandinServer.ollama(models=["qwen3:4b", "qwen3-vl:4b-instruct"], name="ollama-a") as server:
        yield server


@pytest.fixture
def vllm() -> Iterator[StandinServer]:
    with StandinServer.vllm(model="Qwen/Qwen3-4B", served_model_names=["qwen3"], name="vllm-a") as server:
        yield server


def client_for(server: StandinServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=5)


def sse_events(raw: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    return [block[len("data: ") :] for block in raw.decode().split("\n\n") if block.startswith("data: ")]


# ------------------------------------------------------------------------------- Ollama


def test_ollama_discovery_endpoints_match_ollama(ollama: StandinServer) -> None:
    root = httpx.get(ollama.url + "/")
    assert (root.status_code, root.text) == (200, "Ollama is running")
    assert httpx.get(ollama.url + "/api/version").json()["version"].startswith("0.12.")
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


@pytest.mark.parametrize("kind", ["ollama", "vllm"])
def test_fault_down_drops_the_connection(kind: str, ollama: StandinServer, vllm: StandinServer) -> None:
    server = ollama if kind == "ollama" else vllm
    server.set_fault("down", count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(server.url + "/v1/models")
    assert httpx.get(server.url + "/v1/models").status_code == 200
    assert [r["fault"] for r in server.request_log] == ["down", "ok"]


def test_fault_hang_holds_until_reset_and_does_not_block_teardown() -> None:
    server = StandinServer.vllm(model="m")
    server.set_fault("hang")
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(server.url + "/v1/models", timeout=0.3)
    outcome: list[object] = []
    held = threading.Thread(target=lambda: outcome.append(_try_get(server.url + "/v1/models", 10)))
    held.start()
    time.sleep(0.2)
    started = time.monotonic()
    server.close()  # a hung request is in flight: closing must still be quick
    held.join(timeout=5)
    assert time.monotonic() - started < 2 and not held.is_alive()
    assert isinstance(outcome[0], httpx.TransportError)


def _try_get(url: str, timeout: float) -> object:
    try:
        return httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return exc


def test_fault_hang_released_by_reset(ollama: StandinServer) -> None:
    ollama.set_fault("hang")
    result: list[object] = []
    waiter = threading.Thread(target=lambda: result.append(_try_get(ollama.url + "/api/tags", 10)))
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive()
    ollama.reset()
    waiter.join(timeout=2)
    assert not waiter.is_alive() and isinstance(result[0], httpx.TransportError)
    assert httpx.get(ollama.url + "/api/tags").status_code == 200


def test_fault_slow_delays_then_answers(vllm: StandinServer) -> None:
    vllm.set_fault("slow", seconds=0.4, count=1)
    started = time.monotonic()
    assert httpx.get(vllm.url + "/health").status_code == 200
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    httpx.get(vllm.url + "/health")
    assert time.monotonic() - started < 0.3


def test_fault_error500_in_each_error_shape(ollama: StandinServer, vllm: StandinServer) -> None:
    for server in (ollama, vllm):
        server.set_fault("error500", message="boom")
    v1 = httpx.post(ollama.url + "/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER})
    assert v1.status_code == 500 and v1.json()["error"]["type"] == "api_error"
    assert v1.json()["error"]["message"] == "boom"
    native = httpx.post(ollama.url + "/api/chat", json={"model": "qwen3:4b", "messages": USER})
    assert (native.status_code, native.json()) == (500, {"error": "boom"})
    other = httpx.post(vllm.url + "/v1/chat/completions", json={"model": "qwen3", "messages": USER})
    assert other.status_code == 500 and other.json()["type"] == "InternalServerError"
    with pytest.raises(openai.InternalServerError):
        client_for(vllm).chat.completions.create(model="qwen3", messages=USER)


def test_fault_error429_sends_retry_after_via_control_api(ollama: StandinServer) -> None:
    ctl = httpx.post(ollama.url + "/_standin/fault", json={"mode": "error429", "retry_after": 3, "count": 1})
    assert ctl.json()["mode"] == "error429"
    limited = httpx.post(ollama.url + "/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert httpx.post(ollama.url + "/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER}).is_success
    assert httpx.get(ollama.url + "/_standin/fault").json()["mode"] == "ok"


@pytest.mark.parametrize("kind", ["ollama", "vllm"])
def test_fault_cut_drops_stream_before_done(kind: str, ollama: StandinServer, vllm: StandinServer) -> None:
    server, model = (ollama, "qwen3:4b") if kind == "ollama" else (vllm, "qwen3")
    server.set_fault("cut", after=2)
    received: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST",
            server.url + "/v1/chat/completions",
            json={"model": model, "messages": USER, "stream": True},
        ) as resp,
    ):
        for line in resp.iter_lines():
            if line.startswith("data: "):
                received.append(line)
    assert len(received) == 2 and "data: [DONE]" not in received
    with pytest.raises(openai.APIError):
        list(client_for(server).chat.completions.create(model=model, messages=USER, stream=True))
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(server.url + "/v1/chat/completions", json={"model": model, "messages": USER})


def test_fault_limited_to_paths_and_count(ollama: StandinServer) -> None:
    ollama.set_fault("error500", count=1, paths=["/v1/chat/completions"])
    assert httpx.get(ollama.url + "/api/tags").status_code == 200
    chat = {"model": "qwen3:4b", "messages": USER}
    assert httpx.post(ollama.url + "/v1/chat/completions", json=chat).status_code == 500
    assert httpx.post(ollama.url + "/v1/chat/completions", json=chat).status_code == 200


def test_control_api_requests_reset_and_validation(ollama: StandinServer) -> None:
    httpx.post(ollama.url + "/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER, "seed": 7})
    log = httpx.get(ollama.url + "/_standin/requests").json()
    assert [(r["method"], r["path"], r["body"]["seed"]) for r in log] == [("POST", "/v1/chat/completions", 7)]
    bad = httpx.post(ollama.url + "/_standin/fault", json={"mode": "explode"})
    assert bad.status_code == 400 and "explode" in bad.json()["error"]
    httpx.post(ollama.url + "/_standin/fault", json={"mode": "error500"})
    assert httpx.post(ollama.url + "/_standin/reset").is_success
    assert httpx.get(ollama.url + "/_standin/requests").json() == []
    assert httpx.get(ollama.url + "/api/tags").status_code == 200
    assert httpx.post(ollama.url + "/_standin/config", json={"chunks": 2}).json()["chunks"] == 2
    stream = client_for(ollama).chat.completions.create(model="qwen3:4b", messages=USER, stream=True)
    assert sum(1 for c in stream if c.choices and c.choices[0].delta.content) == 2


def test_stop_refuses_connections_and_start_reuses_the_port(ollama: StandinServer) -> None:
    port = ollama.port
    pooled = httpx.Client(base_url=ollama.url)  # keeps its connection alive across calls
    assert pooled.get("/api/tags").status_code == 200
    ollama.stop()
    with pytest.raises(httpx.TransportError):
        pooled.get("/api/tags")
    with pytest.raises(httpx.ConnectError):
        httpx.get(ollama.url + "/api/tags")
    ollama.start()
    assert ollama.port == port
    assert pooled.get("/api/tags").status_code == 200
    pooled.close()


# ---------------------------------------------------------------------------------- CLI


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"{url} never came up")


@pytest.fixture
def opt_standin(tmp_path: Path) -> Path:
    """The stand-in files copied flat, as the Dockerfiles lay them out in /opt/standin."""
    target = tmp_path / "standin"
    target.mkdir()
    for source in STANDINS.glob("*.py"):
        shutil.copy(source, target / source.name)
    return target


def test_ollama_runs_as_a_plain_script_with_ollama_env(opt_standin: Path, tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "OLLAMA_HOST": f"127.0.0.1:{port}",
        "OLLAMA_MODELS": str(tmp_path / "models"),
        "JETSON_JETPACK": "6",
        "OLLAMA_KEEP_ALIVE": "24h",
    }
    script = str(opt_standin / "ollama.py")
    proc = subprocess.Popen([sys.executable, script, "serve", "--quiet"], env=env, stderr=subprocess.PIPE)
    try:
        _wait_up(f"http://127.0.0.1:{port}/", proc)
        version = httpx.get(f"http://127.0.0.1:{port}/api/version")
        assert json.loads(version.headers["x-standin-env"])["JETSON_JETPACK"] == "6"
        assert version.json()["standin"]["env"]["OLLAMA_KEEP_ALIVE"] == "24h"
        pull = subprocess.run([sys.executable, script, "pull", "qwen3:4b"], env=env, capture_output=True, text=True)
        assert pull.returncode == 0 and pull.stdout.splitlines()[-1] == "success"
        missing = subprocess.run(
            [sys.executable, script, "pull", "doesnotexist"], env=env, capture_output=True, text=True
        )
        assert missing.returncode == 1 and "file does not exist" in missing.stderr
        listing = subprocess.run([sys.executable, script, "list"], env=env, capture_output=True, text=True)
        assert listing.stdout.splitlines()[1].startswith("qwen3:4b")
        assert (tmp_path / "models/manifests/registry.ollama.ai/library/qwen3/4b").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0


def test_vllm_module_cli_ignores_engine_flags() -> None:
    port = _free_port()
    cmd = [sys.executable, "-m", "tests.standins.vllm", "serve", "org/Model-7B", "--port", str(port)]
    cmd += [
        "--host",
        "127.0.0.1",
        "--gpu-memory-utilization",
        "0.8",
        "--enforce-eager",
        "--max-model-len",
        "2048",
    ]
    cmd += ["--served-model-name", "model-a", "model-b", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=STANDINS.parent.parent, stderr=subprocess.PIPE)
    try:
        _wait_up(f"http://127.0.0.1:{port}/health", proc)
        data = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"]
        assert [(m["id"], m["root"], m["max_model_len"]) for m in data] == [
            ("model-a", "org/Model-7B", 2048),
            ("model-b", "org/Model-7B", 2048),
        ]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ("127.0.0.1", 11434)),
        ("0.0.0.0", ("0.0.0.0", 11434)),
        ("0.0.0.0:11500", ("0.0.0.0", 11500)),
        (":11434", ("0.0.0.0", 11434)),
        ("http://10.0.0.5:8080/", ("10.0.0.5", 8080)),
        ("[::1]:11434", ("::1", 11434)),
    ],
)
def test_ollama_host_is_read_like_ollama(value: str | None, expected: tuple[str, int]) -> None:
    assert parse_ollama_host(value) == expected
