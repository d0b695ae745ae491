"""The chat request contract: what the gateway refuses with a 400 naming the parameter, before
anything is routed or forwarded to an engine.

Checked: the body's shape, content parts (their type and payload), the sampling parameters' types
and OpenAI's ranges, and ``data:`` image URLs (base64 that decodes to the image type it claims).
Not checked: every other field, which goes to the engine as it came (engines take extras such as
``top_k``). ``null`` stands for "not given", as in OpenAI's API and the old gateway's pydantic model.

Content part types, from OpenAI's chat API (``ChatCompletion*MessageParam`` in the ``openai``
package, 3.63): a user message takes ``text``, ``image_url``, ``input_audio`` and ``file``; an assistant
message ``text`` and ``refusal``. Accepted and forwarded: ``text``, ``image_url``, ``input_audio``
(Ollama's OpenAI layer and vLLM both read it) and ``refusal`` (vLLM reads it; it is what an OpenAI
client replays of an assistant turn). Refused: ``file`` (neither engine reads it: Ollama's
``FromChatRequest`` in openai/openai.go answers "invalid message format" for any other type, and
vLLM's ``MM_PARSER_MAP`` in vllm/entrypoints/chat_utils.py has no entry for it) and every type that
is not OpenAI's.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from gateway.errors import ImageUnavailable, InvalidRequest
from gateway.images import DATA_URL_IMAGE_TYPES, declared_image_format, image_format

# part type -> the key holding its payload
_CONTENT_PARTS = {"text": "text", "image_url": "image_url", "input_audio": "input_audio", "refusal": "refusal"}
# OpenAI's ranges (openai/types/chat/completion_create_params.py). vLLM's SamplingParams._verify_args
# (vllm/sampling_params.py) refuses the same, and a top_p of 0 besides; Ollama's OpenAI layer
# (openai/openai.go, FromChatRequest) checks none.
_NUMBER_RANGES = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}
_POSITIVE_INTEGERS = ("max_tokens", "max_completion_tokens", "n")


def validate_chat_request(body: Any) -> None:
    """Raise an :class:`InvalidRequest` naming the first parameter no engine should be sent."""
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
            if type(part) is dict and part.get("type") == "text" and type(part.get("text")) is str:
                continue  # the common part, checked without a call
            _check_part(part, i, j)
    if "stream" in body:
        if body["stream"] is None:
            del body["stream"]  # not given: the model's default applies, to the engine as to the relay
        elif not isinstance(body["stream"], bool):
            raise InvalidRequest("'stream' must be a boolean.", param="stream")
    for key, (low, high) in _NUMBER_RANGES.items():
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRequest(f"'{key}' must be a number.", param=key)
        if not low <= value <= high:
            raise InvalidRequest(f"'{key}' must be between {low:g} and {high:g}; got {value!r}.", param=key)
    for key in _POSITIVE_INTEGERS:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, float) and value.is_integer():
            value = body[key] = int(value)  # 100.0 is 100 (the old gateway's pydantic read it so); Go's int is not
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(f"'{key}' must be an integer.", param=key)
        if value < 1:
            raise InvalidRequest(f"'{key}' must be at least 1; got {value}.", param=key)


def _check_part(part: Any, i: int, j: int) -> None:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        where = f"messages[{i}].content[{j}]"
        raise InvalidRequest(f"{where} must be an object with a 'type'.", param=where)
    kind = part["type"]
    payload_key = _CONTENT_PARTS.get(kind)
    if payload_key is None:
        where = f"messages[{i}].content[{j}].type"
        raise InvalidRequest(f"{where} {kind!r} is not supported: use one of {', '.join(sorted(_CONTENT_PARTS))}.",
                             param=where)
    payload = part.get(payload_key)
    if kind == "image_url":
        url = image_url_of(part)
        if not isinstance(url, str):
            where = f"messages[{i}].content[{j}].image_url"
            raise InvalidRequest(f"{where}.url must be a string.", param=where)
        if url.startswith("data:"):
            check_image_data_url(url, f"messages[{i}].content[{j}].image_url")
    elif kind == "input_audio":
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), str):
            where = f"messages[{i}].content[{j}].input_audio"
            raise InvalidRequest(f"{where} must be an object with base64 'data'.", param=where)
    elif not isinstance(payload, str):
        where = f"messages[{i}].content[{j}].{payload_key}"
        raise InvalidRequest(f"{where} must be a string.", param=where)


def image_url_of(part: dict[str, Any]) -> Any:
    """An ``image_url`` part's URL: OpenAI's ``{"url": ...}`` or a plain string, as Ollama also takes."""
    image = part.get("image_url")
    return image.get("url") if isinstance(image, dict) else image


def check_image_data_url(url: str, param: str) -> None:
    """``data:image/<type>[;...];base64,<data>`` whose data is valid base64 of that image type."""
    header, sep, payload = url.partition(",")
    params = header[5:].split(";")
    media_type = params[0].strip()
    if not sep or params[-1].strip().lower() != "base64" or not media_type.lower().startswith("image/"):
        raise ImageUnavailable("Image data URLs must look like data:image/<type>;base64,<data>.", param=param)
    claimed = declared_image_format(media_type)
    if claimed is None:
        raise ImageUnavailable(f"Image data URLs of type {media_type!r} are not accepted: send "
                               f"{', '.join(DATA_URL_IMAGE_TYPES)}.", param=param)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageUnavailable("The image data URL does not hold valid base64.", param=param) from exc
    found = image_format(data[:32])
    if found != claimed:
        what = f"{found.upper()} data" if found else "not image data of a known type"
        raise ImageUnavailable(f"The image data URL claims {media_type} but holds {what}.", param=param)
