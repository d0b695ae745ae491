"""POST /v1/embeddings."""

from __future__ import annotations

import time

import falcon

from gateway import wirejson
from gateway.embeddings import EmbeddingNames, EmbeddingService, parse_inputs
from gateway.middleware import read_json
from gateway.remote import HOP_ENVIRON
from gateway.resources.limits import InflightLimiter, RequestBudget, post_only
from gateway.routing import Router
from gateway.usage import ModelFigures


class EmbeddingsResource:
    def __init__(
        self,
        router: Router,
        service: EmbeddingService,
        limiter: InflightLimiter,
        budget: RequestBudget,
    ) -> None:
        self._names = EmbeddingNames(router, service.settings)
        self._service = service
        self._limiter = limiter
        self._budget = budget
        self._figures = ModelFigures(service.metrics)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise post_only("/v1/embeddings")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, self._budget.max_body_bytes)
        texts = parse_inputs(body)
        req.context.model = body["model"]
        route = self._names.route(body["model"])
        self._limiter.acquire()
        try:
            result, served = self._service.embed(body, texts, route, self._budget.deadline(),
                                                 forwarded=HOP_ENVIRON in req.env)
        finally:
            self._limiter.release()
        req.context.served_model = served
        resp.set_header("X-Vilms-Model", served)
        started = getattr(req.context, "started", None)
        self._figures.answered(body["model"], served, time.perf_counter() - started if started else 0.0)
        self._figures.tokens(body["model"], served, result.get("usage"))
        # A batch of 64 is 24,576 floats: the json module spends about a tenth of the local
        # engine's time writing them, orjson (through wirejson) a fiftieth.
        resp.data = wirejson.dumps(result)
        resp.content_type = falcon.MEDIA_JSON
