"""POST /v1/chat/completions: text and vision, plain and streamed."""

from __future__ import annotations

import time
from typing import Any

import falcon

from gateway import wirejson
from gateway.errors import InvalidRequest, UpstreamError
from gateway.middleware import read_json
from gateway.remote import HOP_ENVIRON
from gateway.resources.limits import InflightLimiter, RequestBudget, post_only
from gateway.routing import Router
from gateway.shaping import ChatShaper
from gateway.streaming import SSERelay
from gateway.upstream import UpstreamResult, Upstreams
from gateway.usage import ModelFigures, wants_usage, watch_usage
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
        self._figures = ModelFigures(upstreams.metrics)

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
                forwarded=HOP_ENVIRON in req.env,
            )
            served = result.target.model.name
            req.context.served_model = served
            req.context.endpoint = result.endpoint
            resp.set_header("X-Vilms-Model", served)
            started = getattr(req.context, "started", None)
            self._figures.answered(requested, served, time.perf_counter() - started if started else 0.0)
            if stream:
                self._stream(resp, result, requested if wants_usage(body) else None)
                released = True  # the relay releases the slot when the stream ends
            else:
                resp.data, usage = _rename_model(result.content, requested)
                self._figures.tokens(requested, served, usage)
                resp.content_type = falcon.MEDIA_JSON
        finally:
            if not released:
                self._limiter.release()

    def _stream(self, resp: falcon.Response, result: UpstreamResult, usage_for: str | None) -> None:
        upstreams, limiter = self._upstreams, self._limiter

        def interrupted(reason: str) -> None:
            upstreams.record_failure(result.endpoint, f"stream_{reason}")
            upstreams.metrics.streams_interrupted.inc()

        relay = _ReleasingRelay(result, interrupted, limiter)
        if usage_for is not None:  # only streams that asked for usage pay for looking at it
            relay.count_usage(self._figures, usage_for, result.target.model.name)
        resp.content_type = "text/event-stream"
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Accel-Buffering", "no")
        resp.stream = relay


class _ReleasingRelay(SSERelay):
    def __init__(self, result: UpstreamResult, on_interrupted: Any, limiter: InflightLimiter) -> None:
        super().__init__(result, on_interrupted)
        self._limiter = limiter
        self._released = False
        self._usage: list[Any] = []
        self._count: tuple[ModelFigures, str, str] | None = None

    def count_usage(self, figures: ModelFigures, requested: str, served: str) -> None:
        self._iterator = watch_usage(self._iterator, self._usage)
        self._count = (figures, requested, served)

    def close(self) -> None:
        try:
            if self._count is not None and self._usage:
                figures, requested, served = self._count
                figures.tokens(requested, served, self._usage[-1])
            super().close()
        finally:
            if not self._released:
                self._released = True
                self._limiter.release()


def _rename_model(content: bytes, requested: str) -> tuple[bytes, Any]:
    """Answer with the name the client asked for, as the old gateway did (aliases stay opaque);
    and the answer's ``usage``."""
    try:
        data = wirejson.loads_lenient(content)
    except ValueError as exc:
        raise UpstreamError("The backend sent a response that is not JSON.") from exc
    if not isinstance(data, dict):
        return content, None
    if data.get("model") == requested:
        return content, data.get("usage")  # nothing to rename: spare the re-encoding
    data["model"] = requested
    return wirejson.dumps(data), data.get("usage")
