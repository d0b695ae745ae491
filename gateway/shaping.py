"""What the gateway changes in a request before it goes upstream: the model's parameter defaults,
frame trimming for vision requests, and image inlining for Ollama (which only accepts base64 images;
the fetching is in ``gateway.images``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway import wirejson
from gateway.config import Config
from gateway.errors import ImageUnavailable
from gateway.images import ImageFetcher
from gateway.routing import Target
from gateway.validation import image_url_of


class ChatShaper:
    """Builds the upstream body for one target; remote images are fetched once per request."""

    def __init__(self, config: Config, fetcher: ImageFetcher) -> None:
        self._default_max_frames = config.default_max_frames
        self._fetcher = fetcher

    def builder(self, request: dict[str, Any]) -> Callable[[Target], bytes]:
        inlined: dict[str, str] = {}

        def build(target: Target) -> bytes:
            model = target.model
            body = {**model.params, **request, "model": model.wire_name}
            limit = model.max_frames or self._default_max_frames
            if _has_images(body):
                body["messages"] = self._shape_messages(body["messages"], limit, target.engine, inlined)
            return wirejson.dumps(body)

        return build

    def _shape_messages(
        self, messages: list[dict[str, Any]], max_frames: int, engine: str, inlined: dict[str, str]
    ) -> list[dict[str, Any]]:
        shaped = []
        for i, message in enumerate(messages):
            content = message.get("content")
            if not isinstance(content, list):
                shaped.append(message)
                continue
            image_positions = [j for j, part in enumerate(content) if part.get("type") == "image_url"]
            # Frames are usually in time order: the newest ones carry the question's context.
            dropped = set(image_positions[: max(0, len(image_positions) - max_frames)])
            parts = []
            for j, part in enumerate(content):
                if j in dropped:
                    continue
                if part.get("type") == "image_url":
                    part = self._shape_image(part, f"messages[{i}].content[{j}].image_url", engine, inlined)
                parts.append(part)
            shaped.append({**message, "content": parts})
        return shaped

    def _shape_image(self, part: dict[str, Any], param: str, engine: str, inlined: dict[str, str]) -> dict[str, Any]:
        url = image_url_of(part)
        if url.startswith("data:"):
            return part  # checked with the request (gateway.validation)
        if not url.startswith(("http://", "https://")):
            raise ImageUnavailable(f"Unsupported image URL scheme in {url[:40]!r}: use http(s) or data URLs.",
                                   param=param)
        if engine == "openai":
            # A service beyond the box is sent the URL as the client gave it: it fetches from where it
            # is, and a peer box's own gateway applies its own image-fetch rules.
            return part
        # vLLM too gets images inline: it would fetch a URL from anywhere, the box's loopback and cloud
        # metadata included; the gateway fetches only where gateway.image-fetch-networks lets it.
        if url not in inlined:
            inlined[url] = self._fetcher.to_data_url(url, param)
        detail = part.get("image_url", {}).get("detail") if isinstance(part.get("image_url"), dict) else None
        image: dict[str, Any] = {"url": inlined[url]}
        if detail:
            image["detail"] = detail
        return {**part, "image_url": image}


def _has_images(body: dict[str, Any]) -> bool:
    for message in body.get("messages", ()):
        content = message.get("content")
        if isinstance(content, list) and any(p.get("type") == "image_url" for p in content):
            return True
    return False
