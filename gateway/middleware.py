"""Request-scoped concerns that wrap every resource: request id, API-key auth, body limit, access log."""

from __future__ import annotations

import hmac
import random
import re
import time
from typing import Any

import falcon

from gateway import wirejson
from gateway.accesslog import AccessLog
from gateway.apikeys import ApiKeys
from gateway.errors import AuthenticationFailed, InvalidRequest, PayloadTooLarge, UnsupportedMediaType

OPEN_PATHS = frozenset({"/health", "/health_check", "/health/ready"})
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RequestIdMiddleware:
    """Takes the client's ``X-Request-ID`` when it is sane, else makes one; always returns it.

    Made ones need to be unique, not unguessable: ``random`` spares a getrandom() call per request."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()
        given = req.get_header("X-Request-ID")
        req.context.request_id = given if given and _SAFE_REQUEST_ID.match(given) else f"{random.getrandbits(128):032x}"
        resp.set_header("X-Request-ID", req.context.request_id)


class AuthMiddleware:
    """Bearer API keys, compared in constant time. Health endpoints stay open for probes."""

    def __init__(self, keys: ApiKeys) -> None:
        self._api_keys = keys
        self._enabled = keys.enabled

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not self._enabled or req.path in OPEN_PATHS:
            return
        header = req.get_header("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationFailed("Missing API key: send 'Authorization: Bearer <key>'.")
        presented = token.strip().encode()
        # Compare against every key so the time taken does not reveal which prefix matched.
        matched = False
        for key in self._api_keys.current():
            matched |= hmac.compare_digest(presented, key)
        if not matched:
            raise AuthenticationFailed("Incorrect API key provided.")


class BodyLimitMiddleware:
    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        length = req.content_length
        if length is not None and length > self._max:
            raise PayloadTooLarge(f"The request body is {length} bytes; the limit is {self._max}.")


class JsonBodyMiddleware:
    """A POST to an endpoint that takes one must carry JSON: ``application/json`` (any parameters,
    such as ``charset``) or an ``application/*+json`` type; anything else is a 415 before the body
    is read. A request without a Content-Type is read as JSON, as the old gateway (FastAPI's
    ``get_request_handler``) read it. Checked once the route is known, so an unknown path stays a
    404 and a wrong method on a known one a 405, whatever the body."""

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: object, params: Any) -> None:
        if req.method != "POST" or resource is None or not hasattr(resource, "on_post"):
            return
        header = req.content_type
        if not header:
            return
        media_type = header.split(";", 1)[0].strip().lower()
        if media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json")):
            return
        raise UnsupportedMediaType(f"Content type {header.strip()[:100]!r} is not supported: send application/json.")


class AccessLogMiddleware:
    """Counts and times every request; with an access log, writes one JSON line for it. Never logs
    headers or bodies, so keys and prompts stay out of logs."""

    def __init__(self, metrics: Any, access_log: AccessLog | None) -> None:
        self._metrics = metrics
        self._access_log = access_log
        # prometheus_client looks a labelled child up under a lock on every .labels() call; the
        # routes and statuses are few, so keep the children at hand.
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        started = getattr(req.context, "started", None)
        elapsed = time.perf_counter() - started if started is not None else 0.0
        route = req.uri_template or "unmatched"
        status = resp.status_code
        children = self._children.get((route, status))
        if children is None:
            children = (self._metrics.requests.labels(route, str(status)), self._metrics.latency.labels(route))
            self._children[(route, status)] = children
        children[0].inc()
        children[1].observe(elapsed)
        if self._access_log is None:
            return
        entry = {
            "ts": round(time.time(), 3),
            "request_id": getattr(req.context, "request_id", None),
            "method": req.method,
            "path": req.path,
            "status": status,
            "ms": round(elapsed * 1000, 2),
            "client": req.remote_addr,
        }
        for key in ("model", "served_model", "endpoint", "stream"):
            value = req.context.get(key)
            if value is not None:
                entry[key] = value
        self._access_log.write(entry)


def read_json(req: falcon.Request, max_bytes: int) -> Any:
    """The request's JSON body, or an OpenAI-shaped 4xx that says what is wrong with it. Its
    Content-Type was checked by :class:`JsonBodyMiddleware`."""
    raw = req.bounded_stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"The request body exceeds the limit of {max_bytes} bytes.")
    if not raw.strip():
        raise InvalidRequest("The request body is empty: send a JSON object.")
    try:
        return wirejson.loads(raw)
    except (ValueError, RecursionError) as exc:
        detail = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
        raise InvalidRequest(f"The request body is not valid JSON: {detail[:200]}") from exc
