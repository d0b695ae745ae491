"""``gateway.image-fetch-networks``: with an allow-list, images come only from the listed networks,
redirects included; without one, never from the box itself (loopback, link-local, unspecified,
multicast); and no engine fetches a remote image on its own."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.config import ConfigError, parse_config
from gateway.images import AddressNotAllowed, AllowedNetworksBackend
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


# Without gateway.image-fetch-networks: the box itself is closed, the LAN stays open.

def lan_address() -> str:
    """This machine's address on its own network (not loopback), as a LAN camera's would be."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        except OSError:
            pytest.skip("this machine has no route off loopback")
        address = str(probe.getsockname()[0])
    if address.startswith("127."):
        pytest.skip("this machine has no address off loopback")
    return address


@pytest.fixture
def lan_images() -> Iterator[ImageServer]:
    server = ImageServer(host=lan_address())
    yield server
    server.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0.0.0.0", "127.1.2.3", "[::1]", "[::ffff:127.0.0.1]"])
def test_by_default_images_on_the_box_itself_are_a_400_and_never_requested(
    ollama_a: StandinServer, images: ImageServer, host: str
) -> None:
    port = images.url.rsplit(":", 1)[1]
    resp = ask(gateway_config(VLM, ollama=[ollama_a.url]), "qwen2.5vl:3b", [f"http://{host}:{port}/cat.png"])
    assert resp.status_code == 400, resp.text
    error = resp.json["error"]
    assert error["code"] == "invalid_image" and error["param"] == "messages[0].content[1].image_url"
    assert "gateway.image-fetch-networks" in error["message"]
    assert images.hits == []
    assert ollama_a.bodies("/v1/chat/completions") == []


def test_by_default_vllm_is_not_handed_a_url_on_the_box_either(vllm_qwen: StandinServer, images: ImageServer) -> None:
    model = [{"name": "Qwen/Qwen3-4B", "engine": "vllm"}]
    resp = ask(gateway_config(model, vllm=[vllm_qwen.url]), "Qwen/Qwen3-4B", [images.url + "/cat.png"])
    assert resp.status_code == 400, resp.text
    assert images.hits == [] and vllm_qwen.bodies("/v1/chat/completions") == []


def test_by_default_an_image_on_the_lan_is_fetched(ollama_a: StandinServer, lan_images: ImageServer) -> None:
    resp = ask(gateway_config(VLM, ollama=[ollama_a.url]), "qwen2.5vl:3b", [lan_images.url + "/cat.png"])
    assert resp.status_code == 200, resp.text
    sent = ollama_a.bodies("/v1/chat/completions")[0]["messages"][0]["content"][1]
    assert sent["image_url"]["url"] == PNG_DATA_URL


@pytest.mark.parametrize("target", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
def test_by_default_a_redirect_from_the_lan_onto_the_box_is_refused(
    ollama_a: StandinServer, lan_images: ImageServer, images: ImageServer, target: str
) -> None:
    port = images.url.rsplit(":", 1)[1]
    resp = ask(gateway_config(VLM, ollama=[ollama_a.url]), "qwen2.5vl:3b",
               [f"{lan_images.url}/redirect?to=http://{target}:{port}/cat.png"])
    assert resp.status_code == 400, resp.text
    assert "gateway.image-fetch-networks" in resp.json["error"]["message"]
    assert lan_images.hits == [f"/redirect?to=http://{target}:{port}/cat.png"]
    assert images.hits == []


def test_by_default_loopback_link_local_unspecified_and_multicast_are_refused_in_every_spelling() -> None:
    backend = AllowedNetworksBackend(parse_config({}).service.image_fetch_networks)
    for refused in ("127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1", "169.254.169.254",
                    "::ffff:169.254.169.254", "fe80::1%2", "0.0.0.0", "::", "::ffff:0.0.0.0", "224.0.0.251",
                    "ff02::1", "255.255.255.255"):
        assert not backend.allows(refused), refused
    for allowed in ("192.168.1.20", "10.0.0.5", "172.16.4.4", "fd12::7", "203.0.113.9", "2001:db8::1"):
        assert backend.allows(allowed), allowed


def test_a_host_name_whose_answer_lands_on_the_box_is_refused_where_the_socket_is_opened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A DNS answer that changes between a check and the connect cannot matter: the address checked
    # is the one connected to. Here the name answers loopback first, a LAN address second.
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80)),
               (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.168.7.7", 80))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: answers)
    backend = AllowedNetworksBackend(())
    assert backend.allowed_address("camera.example", 80) == "192.168.7.7"
    answers.pop()
    with pytest.raises(AddressNotAllowed, match=r"camera\.example resolves to 127\.0\.0\.1"):
        backend.allowed_address("camera.example", 80)
