"""``gateway.image-fetch-networks``: with an allow-list, images come only from the listed networks,
redirects included, and no engine fetches a remote image on its own."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from gateway.config import ConfigError, parse_config
from gateway.images import AllowedNetworksBackend
from tests.gateway_harness import client_for, gateway_config
from tests.image_server import PNG, ImageServer, vision_message
from tests.standins.fixtures import StandinServer

VLM = [{"name": "qwen2.5vl:3b", "type": "vlm"}]
PNG_DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


def ask(doc: dict[str, Any], model: str, urls: list[str]) -> Any:
    with client_for(doc) as (client, _):
        return client.simulate_post("/v1/chat/completions", json={"model": model, "messages": vision_message(urls)})


def test_an_image_inside_the_allowed_networks_is_fetched(ollama_a: StandinServer, images: ImageServer) -> None:
    doc = gateway_config(VLM, ollama=[ollama_a.url], gateway={"image-fetch-networks": ["127.0.0.0/8"]})
    resp = ask(doc, "qwen2.5vl:3b", [images.url + "/cat.png"])
    assert resp.status_code == 200, resp.text
    sent = ollama_a.bodies("/v1/chat/completions")[0]["messages"][0]["content"][1]
    assert sent["image_url"]["url"] == PNG_DATA_URL


def test_an_image_outside_the_allowed_networks_is_a_400_and_never_requested(
    ollama_a: StandinServer, images: ImageServer
) -> None:
    doc = gateway_config(VLM, ollama=[ollama_a.url], gateway={"image-fetch-networks": ["192.0.2.0/24", "fd00::/8"]})
    resp = ask(doc, "qwen2.5vl:3b", [images.url + "/cat.png"])
    assert resp.status_code == 400
    error = resp.json["error"]
    assert error["code"] == "invalid_image"
    assert error["param"] == "messages[0].content[1].image_url"
    assert "127.0.0.1" in error["message"] and "gateway.image-fetch-networks" in error["message"]
    assert images.hits == []
    assert ollama_a.bodies("/v1/chat/completions") == []


def test_a_redirect_out_of_the_allowed_networks_is_refused(ollama_a: StandinServer, images: ImageServer) -> None:
    port = images.url.rsplit(":", 1)[1]
    doc = gateway_config(VLM, ollama=[ollama_a.url], gateway={"image-fetch-networks": ["127.0.0.1/32"]})
    resp = ask(doc, "qwen2.5vl:3b", [f"{images.url}/redirect?to=http://127.0.0.2:{port}/cat.png"])
    assert resp.status_code == 400
    message = resp.json["error"]["message"]
    assert "127.0.0.2 resolves to 127.0.0.2" in message and "gateway.image-fetch-networks" in message
    assert images.hits == [f"/redirect?to=http://127.0.0.2:{port}/cat.png"]


def test_a_redirect_inside_the_allowed_networks_is_followed(ollama_a: StandinServer, images: ImageServer) -> None:
    doc = gateway_config(VLM, ollama=[ollama_a.url], gateway={"image-fetch-networks": ["127.0.0.1/32"]})
    resp = ask(doc, "qwen2.5vl:3b", [f"{images.url}/redirect?to={images.url}/cat.png"])
    assert resp.status_code == 200, resp.text
    assert images.hits[-1] == "/cat.png"


def test_host_names_are_checked_by_the_address_they_resolve_to(
    ollama_a: StandinServer, images: ImageServer
) -> None:
    url = images.url.replace("127.0.0.1", "localhost") + "/cat.png"
    allowed = gateway_config(VLM, ollama=[ollama_a.url], gateway={"image-fetch-networks": ["127.0.0.0/8"]})
    assert ask(allowed, "qwen2.5vl:3b", [url]).status_code == 200
    refused = gateway_config(VLM, ollama=[ollama_a.url], gateway={"image-fetch-networks": ["10.0.0.0/8"]})
    resp = ask(refused, "qwen2.5vl:3b", [url])
    assert resp.status_code == 400
    assert "localhost resolves to" in resp.json["error"]["message"]


def test_with_an_allow_list_vllm_gets_images_inline_instead_of_fetching_them(
    vllm_qwen: StandinServer, images: ImageServer
) -> None:
    model = [{"name": "Qwen/Qwen3-4B", "engine": "vllm"}]
    allowed = gateway_config(model, vllm=[vllm_qwen.url], gateway={"image-fetch-networks": ["127.0.0.0/8"]})
    assert ask(allowed, "Qwen/Qwen3-4B", [images.url + "/cat.png"]).status_code == 200
    sent = vllm_qwen.bodies("/v1/chat/completions")[0]["messages"][0]["content"][1]
    assert sent["image_url"]["url"] == PNG_DATA_URL

    refused = gateway_config(model, vllm=[vllm_qwen.url], gateway={"image-fetch-networks": ["10.0.0.0/8"]})
    assert ask(refused, "Qwen/Qwen3-4B", [images.url + "/cat.png"]).status_code == 400
    assert len(vllm_qwen.bodies("/v1/chat/completions")) == 1


def test_ipv4_mapped_ipv6_addresses_count_as_their_ipv4_address() -> None:
    backend = AllowedNetworksBackend(parse_config(
        {"gateway": {"image-fetch-networks": ["10.0.0.0/8", "fd00::/8"]}}).service.image_fetch_networks)
    assert backend.allows("::ffff:10.1.2.3")
    assert backend.allows("fd12::1")
    assert not backend.allows("::ffff:192.168.1.1")
    assert not backend.allows("192.168.1.1")


def test_networks_are_parsed_and_bad_ones_named() -> None:
    service = parse_config({"gateway": {"image-fetch-networks": ["10.0.5.0/24", "10.0.0.7", "fd00::/8"]}}).service
    assert [str(net) for net in service.image_fetch_networks] == ["10.0.5.0/24", "10.0.0.7/32", "fd00::/8"]
    assert parse_config({}).service.image_fetch_networks == ()
    with pytest.raises(ConfigError) as caught:
        parse_config({"gateway": {"image-fetch-networks": ["10.0.0.0/8", "10.0.0.0/33", "cameras.lan"]}})
    problems = caught.value.problems
    assert any(p.startswith("gateway.image-fetch-networks[1]: '10.0.0.0/33' is not an IP network") for p in problems)
    assert any(p.startswith("gateway.image-fetch-networks[2]: 'cameras.lan' is not an IP network") for p in problems)
