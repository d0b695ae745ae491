"""POST /v1/chat/completions through real loopback backends: params, frames, images, streaming."""

from __future__ import annotations

import base64
import json

import pytest

from tests.gateway_harness import client_for, gateway_config
from tests.image_server import LOOPBACK_IMAGES, PNG, ImageServer, vision_message
from tests.standins.fixtures import StandinServer

USER = [{"role": "user", "content": "hello there"}]


def data_url(tag: int) -> str:
    return "data:image/png;base64," + base64.b64encode(PNG + bytes([tag])).decode()


def test_chat_reaches_the_resolved_model_and_answers_with_the_requested_name(ollama_a: StandinServer) -> None:
    doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[ollama_a.url],
                         aliases={"LLM": "qwen3:4b"})
    with client_for(doc) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json={"model": "LLM", "messages": USER})
    assert resp.status_code == 200
    assert resp.json["model"] == "LLM"
    assert resp.json["choices"][0]["message"]["content"] == "[ollama-a] qwen3:4b: hello there (images: 0)"
    assert resp.headers["X-Vilms-Model"] == "qwen3:4b"
    assert ollama_a.bodies("/v1/chat/completions")[0]["model"] == "qwen3:4b"


def test_model_params_are_defaults_and_request_values_win(ollama_a: StandinServer) -> None:
    model = {"name": "qwen3:4b", "engine": "ollama",
             "params": [{"temperature": 0.7}, {"max-tokens": 1024}, {"top_p": 0.9}]}
    with client_for(gateway_config([model], ollama=[ollama_a.url])) as (client, _):
        client.simulate_post("/v1/chat/completions",
                             json={"model": "qwen3:4b", "messages": USER, "temperature": 0.1})
    sent = ollama_a.bodies("/v1/chat/completions")[0]
    assert sent["temperature"] == 0.1
    assert sent["max_tokens"] == 1024
    assert sent["top_p"] == 0.9
    assert "max_frames" not in sent


def test_vision_frames_are_trimmed_to_the_newest_max_frames(ollama_a: StandinServer) -> None:
    model = {"name": "qwen2.5vl:3b", "type": "vlm", "params": {"max-frames": 2}}
    frames = [data_url(i) for i in range(5)]
    with client_for(gateway_config([model], ollama=[ollama_a.url])) as (client, _):
        resp = client.simulate_post("/v1/chat/completions",
                                    json={"model": "qwen2.5vl:3b", "messages": vision_message(frames)})
    assert resp.status_code == 200
    assert "(images: 2)" in resp.json["choices"][0]["message"]["content"]
    content = ollama_a.bodies("/v1/chat/completions")[0]["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "what changed?"}
    assert [p["image_url"]["url"] for p in content[1:]] == frames[-2:]


def test_default_max_frames_applies_when_the_model_sets_none(ollama_a: StandinServer) -> None:
    doc = gateway_config([{"name": "qwen2.5vl:3b", "type": "vlm"}], ollama=[ollama_a.url],
                         **{"default-max-frames": 3})
    with client_for(doc) as (client, _):
        frames = [data_url(i) for i in range(6)]
        client.simulate_post("/v1/chat/completions", json={"model": "qwen2.5vl:3b", "messages": vision_message(frames)})
    content = ollama_a.bodies("/v1/chat/completions")[0]["messages"][0]["content"]
    assert sum(p["type"] == "image_url" for p in content) == 3


def test_remote_images_are_inlined_as_base64_for_ollama(ollama_a: StandinServer, images: ImageServer) -> None:
    doc = gateway_config([{"name": "qwen2.5vl:3b", "type": "vlm"}], ollama=[ollama_a.url], gateway=LOOPBACK_IMAGES)
    with client_for(doc) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json={
            "model": "qwen2.5vl:3b", "messages": vision_message([images.url + "/cat.png", images.url + "/untyped"])})
    assert resp.status_code == 200, resp.text
    parts = ollama_a.bodies("/v1/chat/completions")[0]["messages"][0]["content"][1:]
    expected = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert [p["image_url"]["url"] for p in parts] == [expected, expected]


@pytest.mark.parametrize(
    ("path", "needle"),
    [("/page.html", "is not an image"), ("/missing.png", "HTTP 404"), ("/big.png", "larger than")],
)
def test_images_that_cannot_be_had_are_a_clear_400(
    ollama_a: StandinServer, images: ImageServer, path: str, needle: str
) -> None:
    doc = gateway_config([{"name": "qwen2.5vl:3b", "type": "vlm"}], ollama=[ollama_a.url],
                         gateway={"image-max-bytes": 32 * 1024, **LOOPBACK_IMAGES})
    with client_for(doc) as (client, _):
        resp = client.simulate_post("/v1/chat/completions",
                                    json={"model": "qwen2.5vl:3b", "messages": vision_message([images.url + path])})
    assert resp.status_code == 400
    error = resp.json["error"]
    assert needle in error["message"]
    assert error["param"] == "messages[0].content[1].image_url"
    assert ollama_a.bodies("/v1/chat/completions") == []


def test_unreachable_image_host_is_a_400_not_a_hang(ollama_a: StandinServer) -> None:
    dead = StandinServer.ollama(name="dead")
    url = dead.url + "/cat.png"
    dead.close()
    doc = gateway_config([{"name": "qwen2.5vl:3b", "type": "vlm"}], ollama=[ollama_a.url], gateway=LOOPBACK_IMAGES)
    with client_for(doc) as (client, _):
        resp = client.simulate_post("/v1/chat/completions",
                                    json={"model": "qwen2.5vl:3b", "messages": vision_message([url])})
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "invalid_image"


def test_invalid_base64_image_is_rejected_before_any_backend(ollama_a: StandinServer) -> None:
    with client_for(gateway_config([{"name": "qwen2.5vl:3b", "type": "vlm"}], ollama=[ollama_a.url])) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json={
            "model": "qwen2.5vl:3b", "messages": vision_message(["data:image/png;base64,@@not-base64@@"])})
    assert resp.status_code == 400
    assert "valid base64" in resp.json["error"]["message"]
    assert ollama_a.bodies("/v1/chat/completions") == []


def test_vllm_receives_remote_images_inline_so_it_never_fetches_on_its_own(
    vllm_qwen: StandinServer, images: ImageServer
) -> None:
    doc = gateway_config([{"name": "Qwen/Qwen3-4B", "engine": "vllm"}], vllm=[vllm_qwen.url], gateway=LOOPBACK_IMAGES)
    url = images.url + "/cat.png"
    with client_for(doc) as (client, _):
        resp = client.simulate_post("/v1/chat/completions",
                                    json={"model": "Qwen/Qwen3-4B", "messages": vision_message([url])})
    assert resp.status_code == 200, resp.text
    sent = vllm_qwen.bodies("/v1/chat/completions")[0]
    assert sent["messages"][0]["content"][1]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(
        PNG).decode()


def test_streamed_chat_relays_every_event_and_usage(ollama_a: StandinServer) -> None:
    with client_for(gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[ollama_a.url])) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json={
            "model": "qwen3:4b", "messages": USER, "stream": True, "stream_options": {"include_usage": True}})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in resp.text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "[ollama-a] qwen3:4b: hello there (images: 0)"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


def test_stream_default_from_model_params_is_overridden_by_the_request(ollama_a: StandinServer) -> None:
    model = {"name": "qwen3:4b", "engine": "ollama", "params": [{"stream": False}]}
    with client_for(gateway_config([model], ollama=[ollama_a.url])) as (client, _):
        resp = client.simulate_post("/v1/chat/completions",
                                    json={"model": "qwen3:4b", "messages": USER, "stream": True})
    assert resp.text.rstrip().endswith("data: [DONE]")


def test_embedding_model_on_the_chat_route_is_a_400(ollama_a: StandinServer) -> None:
    doc = gateway_config([{"name": "nomic-embed-text", "type": "embedding", "engine": "ollama"}], ollama=[ollama_a.url])
    with client_for(doc) as (client, _):
        resp = client.simulate_post("/v1/chat/completions", json={"model": "nomic-embed-text", "messages": USER})
    assert resp.status_code == 400
    assert "/v1/embeddings" in resp.json["error"]["message"]
