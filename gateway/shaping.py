"""What the gateway changes in a request before it goes upstream: the model's parameter defaults,
frame trimming for vision requests, and image inlining for Ollama (which only accepts base64 images;
the fetching is in ``gateway.images``)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from gateway import wirejson
from gateway.config import Config
from gateway.errors import ImageUnavailable, InvalidRequest
from gateway.images import ImageFetcher
from gateway.routing import Target


def validate_chat_request(body: Any) -> None:
    """Reject what no backend could serve, with the offending parameter named."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages[{i}] must be an object with a string 'role'.", param=f"messages[{i}]")
        content = message.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise InvalidRequest(f"messages[{i}].content must be a string or an array of parts.",
                                 param=f"messages[{i}].content")
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise InvalidRequest(f"messages[{i}].content[{j}] must be an object with a 'type'.",
                                     param=f"messages[{i}].content[{j}]")
            if part["type"] == "image_url" and not isinstance(_image_url(part), str):
                raise InvalidRequest(f"messages[{i}].content[{j}].image_url.url must be a string.",
                                     param=f"messages[{i}].content[{j}].image_url")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    for key in ("temperature", "top_p", "max_tokens", "n", "presence_penalty", "frequency_penalty"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidRequest(f"'{key}' must be a number.", param=key)


def _image_url(part: dict[str, Any]) -> Any:
    image = part.get("image_url")
    return image.get("url") if isinstance(image, dict) else image


class ChatShaper:
    """Builds the upstream body for one target; remote images are fetched once per request."""

    def __init__(self, config: Config, fetcher: ImageFetcher) -> None:
        self._default_max_frames = config.default_max_frames
        self._fetcher = fetcher

    def builder(self, request: dict[str, Any]) -> Callable[[Target], bytes]:
        inlined: dict[str, str] = {}

        def build(target: Target) -> bytes:
            model = target.model
            body = {**model.params, **request, "model": model.name}
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
        url = _image_url(part)
        if url.startswith("data:"):
            _check_data_url(url, param)
            return part
        if not url.startswith(("http://", "https://")):
            raise ImageUnavailable(f"Unsupported image URL scheme in {url[:40]!r}: use http(s) or data URLs.",
                                   param=param)
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


def _check_data_url(url: str, param: str) -> None:
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64") or not header[5:].startswith("image/"):
        raise ImageUnavailable("Image data URLs must look like data:image/<type>;base64,<data>.", param=param)
    try:
        base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageUnavailable("The image data URL does not hold valid base64.", param=param) from exc
