"""The embeddings service: one request shape, three ways to serve it: an engine model of type
``embedding`` (Ollama/vLLM), a remote OpenAI-compatible API (``embedding.base-url``), or the local
sentence-transformers engine."""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from typing import Any, Protocol

import httpx

from gateway import tls, turns, wirejson
from gateway.config import EmbeddingSettings, normalize_base_url
from gateway.embeddings_local import EmbeddingUnavailable
from gateway.errors import EmbeddingsDisabled, InvalidRequest, ModelNotFound, UpstreamError, UpstreamUnavailable
from gateway.routing import Route, Router
from gateway.upstream import Upstreams

MAX_INPUTS = 2048


class Embedder(Protocol):
    """What the local engine offers (see ``gateway.embeddings_local.LocalEmbedder``)."""

    @property
    def loaded(self) -> bool: ...

    def embed(self, texts: Sequence[str]) -> Any: ...

    def close(self) -> None: ...


def parse_inputs(body: Any) -> list[str]:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("'model' is required and must be a non-empty string.", param="model")
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidRequest("'input' must be a non-empty string or a non-empty array of strings.", param="input")
    if len(texts) > MAX_INPUTS:
        raise InvalidRequest(f"'input' may hold at most {MAX_INPUTS} items.", param="input")
    if any(not t for t in texts):
        raise InvalidRequest("'input' must not contain empty strings.", param="input")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    return texts


def encode_vector(vector: Sequence[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        # OpenAI's base64 form is the little-endian float32 array.
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return [float(x) for x in vector]


def response_body(vectors: Sequence[Sequence[float]], model: str, tokens: int, encoding: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode_vector(v, encoding)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


class EmbeddingNames:
    """Which model names ``/v1/embeddings`` answers, and who answers each.

    A name that resolves to an engine model of ``type: embedding`` goes to that engine; the embedding
    section's model and every alias that leads to it go to the section. Any other name is a 404:
    answering it with the section's model would put vectors of another model, of another dimension,
    into the client's index. On a gateway with no embedding model at all (the section disabled, no
    engine model of that type), a name it does not know gets the old gateway's 400 "Embedding is
    disabled", which is then the whole truth. ``embedding.catch-all: true`` sends every name that
    is not an engine embedding model to the section, as the old gateway did (it ignored the name)."""

    def __init__(self, router: Router, settings: EmbeddingSettings) -> None:
        self._router = router
        self._settings = settings
        self.served = tuple(name for name, _ in router.public_ids() if _embeds(router.resolve(name)))

    def route(self, name: str) -> Route | None:
        """The engine route for ``name``, or None when the embedding section answers it."""
        try:
            route: Route | None = self._router.resolve(name)
        except ModelNotFound:
            route = None
        if route is not None and _embeds(route):
            return None if route.local_embedding else route
        if self._settings.catch_all:
            return None
        if route is None and not self._settings.enabled and not self.served:
            raise EmbeddingsDisabled("Embedding is disabled in config (embedding.enabled is false).", param="model")
        raise ModelNotFound(
            f"The model {name!r} is not an embedding model on this gateway. "
            f"Embedding models: {', '.join(self.served) or 'none'}.",
            param="model",
        )


def _embeds(route: Route) -> bool:
    return route.local_embedding or route.primary.model.type == "embedding"


class EmbeddingService:
    def __init__(self, settings: EmbeddingSettings, upstreams: Upstreams, local: Embedder | None) -> None:
        self.settings = settings
        self.metrics = upstreams.metrics
        self._upstreams = upstreams
        self._local = local
        self._remote: httpx.Client | None = None
        if settings.enabled and settings.base_url:
            headers = {"authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
            base_url = normalize_base_url(settings.base_url)
            self._remote = httpx.Client(
                base_url=base_url, headers=headers, trust_env=False, verify=tls.for_base_url(base_url),
                timeout=httpx.Timeout(upstreams.settings.read_timeout, connect=upstreams.settings.connect_timeout),
            )

    @property
    def local_loaded(self) -> bool:
        return self._local is not None and self._local.loaded

    def embed(self, body: dict[str, Any], texts: list[str], route: Route | None, deadline: float,
              *, forwarded: bool = False) -> tuple[dict[str, Any], str]:
        """The answer and the model that served it. ``route``: an engine model of type embedding
        (from :class:`EmbeddingNames`), or None for the embedding section. ``forwarded``: another
        gateway sent it (answered by this box's engines only)."""
        encoding = body.get("encoding_format", "float")
        requested = body["model"]
        if route is not None:
            return self._via_engine(body, texts, route, deadline, encoding, requested, forwarded)
        return self._via_section(texts, encoding, requested), self.settings.model

    def _via_section(self, texts: list[str], encoding: str, requested: str) -> dict[str, Any]:
        if not self.settings.enabled:
            raise EmbeddingsDisabled("Embedding is disabled in config (embedding.enabled is false).",
                                     param="model")
        if self._remote is not None:
            return self._via_remote(texts, encoding, requested)
        if self._local is None:
            raise UpstreamUnavailable("The local embedding engine is not available on this box.")
        try:
            with turns.waiting():  # inference runs in torch, outside the GIL, for up to seconds
                result = self._local.embed(texts)
        except EmbeddingUnavailable as exc:
            raise UpstreamUnavailable(f"The local embedding engine is unavailable: {exc}") from exc
        return response_body(result.vectors, requested, result.prompt_tokens, encoding)

    def _via_engine(
        self, body: dict[str, Any], texts: list[str], route: Route, deadline: float, encoding: str, requested: str,
        forwarded: bool = False,
    ) -> tuple[dict[str, Any], str]:
        def build(target: Any) -> bytes:
            # Always ask for floats: not every engine version speaks base64, and we re-encode anyway.
            return wirejson.dumps({**body, "model": target.model.wire_name, "input": texts, "encoding_format": "float"})

        result = self._upstreams.call(route.targets, "/v1/embeddings", build, deadline=deadline, forwarded=forwarded)
        return self._reshape(result.content, requested, encoding), result.target.model.name

    def _via_remote(self, texts: list[str], encoding: str, requested: str) -> dict[str, Any]:
        assert self._remote is not None
        payload = {"model": self.settings.model, "input": texts, "encoding_format": "float"}
        try:
            with turns.waiting():
                response = self._remote.post("/v1/embeddings", json=payload)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"The embedding service could not be reached ({type(exc).__name__}).") from exc
        if response.status_code != 200:
            raise UpstreamError(f"The embedding service answered HTTP {response.status_code}.")
        return self._reshape(response.content, requested, encoding)

    @staticmethod
    def _reshape(content: bytes, requested: str, encoding: str) -> dict[str, Any]:
        try:
            data = wirejson.loads_lenient(content)  # thousands of floats: orjson reads them several times faster
            items = sorted(data["data"], key=lambda item: item["index"])
            vectors = [item["embedding"] for item in items]
            usage = data.get("usage") or {}
            tokens = int(usage.get("prompt_tokens") or 0)
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamError("The embedding backend sent a malformed response.") from exc
        return response_body(vectors, requested, tokens, encoding)

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()
        if self._local is not None:
            self._local.close()
