"""Assembles the Falcon app from a parsed config: ``create_app(config, *, upstreams=None)``."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import falcon

from gateway.accesslog import AccessLog
from gateway.apikeys import ApiKeys
from gateway.config import Config
from gateway.embeddings import Embedder, EmbeddingService
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    RouteNotFound,
)
from gateway.health import BackendProber
from gateway.images import ImageFetcher
from gateway.metrics import Metrics
from gateway.middleware import (
    AccessLogMiddleware,
    AuthMiddleware,
    BodyLimitMiddleware,
    JsonBodyMiddleware,
    RequestIdMiddleware,
)
from gateway.resources import (
    ChatResource,
    EmbeddingsResource,
    HealthResource,
    MetricsResource,
    ModelResource,
    ModelsResource,
    ReadyResource,
)
from gateway.resources.limits import InflightLimiter, RequestBudget
from gateway.routing import Router
from gateway.shaping import ChatShaper
from gateway.upstream import Upstreams

log = logging.getLogger("vilms.gateway")


class Gateway:
    """The app plus what must be started and stopped with it (probe thread, pools, embedder)."""

    def __init__(
        self,
        config: Config,
        *,
        upstreams: Upstreams | None = None,
        embedder: Embedder | None = None,
        image_transport: Any = None,
        clock: Callable[[], float] = time.monotonic,
        access_stream: TextIO | None = None,
    ) -> None:
        service = config.service
        self.config = config
        # Looked up now, not at import: the served process's stdout, or whatever a test hands in.
        stream = sys.stdout if access_stream is None else access_stream
        self.access_log = AccessLog(stream) if service.access_log else None
        self.metrics = upstreams.metrics if upstreams is not None else Metrics()
        self.upstreams = upstreams or Upstreams(service, metrics=self.metrics, clock=clock)
        self.router = Router(config)
        self.upstreams.use_models(config.models)
        # Key failovers are written whether or not requests are: they are rare and need acting on.
        self.upstreams.remote.events = (self.access_log or AccessLog(stream)).write
        if embedder is None and config.embedding.enabled and not config.embedding.base_url:
            embedder = _local_embedder(config)
        self.embedder = embedder
        self.embeddings = EmbeddingService(config.embedding, self.upstreams, embedder)
        if embedder is not None:
            self.metrics.watch_embedding(lambda: embedder.loaded)
        self.prober = BackendProber(
            self.router.endpoints(), self.upstreams,
            interval=service.probe_interval, timeout=min(service.connect_timeout + 2.0, 5.0),
            remote=self.router.remote_endpoints(),
        )
        self.fetcher = ImageFetcher(config, transport=image_transport)
        self.limiter = InflightLimiter(
            service.inflight_limit, queue_size=service.queue_limit, queue_timeout=service.queue_timeout,
            on_wait=self.metrics.queue_waited,
        )
        self.metrics.watch_queue(lambda: self.limiter.queued)
        self.api_keys = ApiKeys(service, clock=clock)
        if not self.api_keys.enabled:
            log.warning(
                "authentication is OFF: no gateway.api-keys or gateway.api-key-file in %s, so anyone who "
                "reaches %s:%d can use every model. Set API keys (inventory: vault_gateway_api_keys).",
                config.source, service.host, service.port)
        self.app = self._build_app(clock)

    def _build_app(self, clock: Callable[[], float]) -> falcon.App[Any, Any]:
        service = self.config.service
        middleware: list[Any] = [
            RequestIdMiddleware(),
            AccessLogMiddleware(self.metrics, self.access_log),
            AuthMiddleware(self.api_keys),
            BodyLimitMiddleware(service.max_body_bytes),
            JsonBodyMiddleware(),
        ]
        app: falcon.App[Any, Any] = falcon.App(middleware=middleware)
        app.req_options.strip_url_path_trailing_slash = True
        budget = RequestBudget(service.max_body_bytes, service.request_deadline, clock)
        health = HealthResource()
        app.add_route("/health", health)
        app.add_route("/health_check", health)
        app.add_route("/health/ready", ReadyResource(self.prober, auth=self.api_keys.enabled))
        app.add_route("/metrics", MetricsResource(self.metrics))
        app.add_route("/v1/models", ModelsResource(self.router))
        app.add_route("/v1/models/{model_id:path}", ModelResource(self.router))
        app.add_route(
            "/v1/chat/completions",
            ChatResource(self.router, ChatShaper(self.config, self.fetcher), self.upstreams, self.limiter, budget),
        )
        app.add_route("/v1/embeddings", EmbeddingsResource(self.router, self.embeddings, self.limiter, budget))
        app.add_error_handler(Exception, _unexpected_error)
        app.add_error_handler(falcon.HTTPError, _falcon_error)
        app.add_error_handler(GatewayError, _gateway_error)
        return app

    def start(self) -> None:
        self.prober.start()
        starter = getattr(self.embedder, "start_reaper", None)
        if callable(starter):
            starter()

    def close(self) -> None:
        self.prober.stop()
        self.upstreams.close()
        self.fetcher.close()
        self.embeddings.close()


def create_app(config: Config, *, upstreams: Upstreams | None = None, **kwargs: Any) -> falcon.App[Any, Any]:
    """The WSGI app. Background work (probes, embedding unload) starts with :meth:`Gateway.start`;
    the ``serve`` command does that, tests call it when they want readiness."""
    return Gateway(config, upstreams=upstreams, **kwargs).app


def _local_embedder(config: Config) -> Embedder:
    from gateway.embeddings_local import LocalEmbedder

    emb = config.embedding
    return LocalEmbedder(
        emb.model, device=emb.device, batch_size=emb.batch_size, idle_unload_seconds=emb.idle_unload_seconds
    )


def _render(resp: falcon.Response, error: GatewayError) -> None:
    resp.status = error.status
    resp.data = error.to_json()
    resp.content_type = falcon.MEDIA_JSON
    for name, value in error.headers.items():
        resp.set_header(name, value)


def _gateway_error(req: falcon.Request, resp: falcon.Response, error: GatewayError, params: Any) -> None:
    _render(resp, error)


def _falcon_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError, params: Any) -> None:
    status = error.status_code
    translated: GatewayError
    if status == 404:
        translated = RouteNotFound(f"No route for {req.method} {req.path}.")
    elif status == 405:
        translated = MethodNotAllowed(f"Method {req.method} is not allowed on {req.path}.")
    elif status == 413:
        translated = PayloadTooLarge("The request body is too large.")
    else:
        translated = InvalidRequest(error.description or error.title or "Bad request.", status=status)
    translated.headers.update(dict(error.headers or {}))
    _render(resp, translated)


def _unexpected_error(req: falcon.Request, resp: falcon.Response, error: Exception, params: Any) -> None:
    request_id = getattr(req.context, "request_id", "-")
    log.exception("unhandled error (request %s)", request_id)
    _render(resp, GatewayError(f"Internal gateway error (request id {request_id})."))
