"""POST /v1/chat/completions: text and vision, plain and streamed."""

from __future__ import annotations

from typing import Any

import falcon

from gateway import wirejson
from gateway.errors import InvalidRequest, UpstreamError
from gateway.middleware import read_json
from gateway.resources.limits import InflightLimiter, RequestBudget, post_only
from gateway.routing import Router
from gateway.shaping import ChatShaper
from gateway.streaming import SSERelay
from gateway.upstream import UpstreamResult, Upstreams
from gateway.validation import validate_chat_request


class ChatResource:
    def __init__(
        self,
        router: Router,
        shaper: ChatShaper,
        upstreams: Upstreams,
        limiter: InflightLimiter,
        budget: RequestBudget,
    ) -> None:
        self._router = router
        self._shaper = shaper
        self._upstreams = upstreams
        self._limiter = limiter
        self._budget = budget

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise post_only("/v1/chat/completions")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, self._budget.max_body_bytes)
        validate_chat_request(body)
        requested = body["model"]
        req.context.model = requested
        route = self._router.resolve(requested)
        if route.local_embedding or route.primary.model.type == "embedding":
            raise InvalidRequest(f"{requested!r} is an embedding model: use /v1/embeddings.", param="model")
        self._limiter.acquire()
        released = False
        try:
            # A model's params may default "stream"; the request's own value wins, as for any param.
            stream = bool(body.get("stream", route.primary.model.params.get("stream", False)))
            req.context.stream = stream
            result = self._upstreams.call(
                route.targets,
                "/v1/chat/completions",
                self._shaper.builder(body),
                deadline=self._budget.deadline(),
                stream=stream,
            )
            req.context.served_model = result.target.model.name
            req.context.endpoint = result.endpoint
            resp.set_header("X-Vilms-Model", result.target.model.name)
            if stream:
                self._stream(resp, result)
                released = True  # the relay releases the slot when the stream ends
            else:
                resp.data = _rename_model(result.content, requested)
                resp.content_type = falcon.MEDIA_JSON
        finally:
            if not released:
                self._limiter.release()

    def _stream(self, resp: falcon.Response, result: UpstreamResult) -> None:
        upstreams, limiter = self._upstreams, self._limiter

        def interrupted(reason: str) -> None:
            upstreams.record_failure(result.endpoint, f"stream_{reason}")
            upstreams.metrics.streams_interrupted.inc()

        relay = _ReleasingRelay(result, interrupted, limiter)
        resp.content_type = "text/event-stream"
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Accel-Buffering", "no")
        resp.stream = relay


class _ReleasingRelay(SSERelay):
    def __init__(self, result: UpstreamResult, on_interrupted: Any, limiter: InflightLimiter) -> None:
        super().__init__(result, on_interrupted)
        self._limiter = limiter
        self._released = False

    def close(self) -> None:
        try:
            super().close()
        finally:
            if not self._released:
                self._released = True
                self._limiter.release()


def _rename_model(content: bytes, requested: str) -> bytes:
    """Answer with the name the client asked for, as the old gateway did (aliases stay opaque)."""
    try:
        data = wirejson.loads_lenient(content)
    except ValueError as exc:
        raise UpstreamError("The backend sent a response that is not JSON.") from exc
    if not isinstance(data, dict) or data.get("model") == requested:
        return content  # nothing to rename: spare the re-encoding
    data["model"] = requested
    return wirejson.dumps(data)
