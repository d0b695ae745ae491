"""Calls to the engines: endpoints tried in order, retries with bounded backoff, cooldown of endpoints
that keep failing, one pooled keep-alive connection pool per backend, and a per-request deadline."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from gateway import tls, turns
from gateway.config import ModelEntry, ServiceSettings
from gateway.engine_failures import TIMEOUT_KINDS, failure_kind
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.httpclient import Pool, Response
from gateway.metrics import Metrics
from gateway.remote import HOP_HEADER, HOP_LINE, RemoteAccess
from gateway.routing import Target

BodyBuilder = Callable[[Target], bytes]


@dataclass
class EndpointState:
    failures: int = 0
    cooled_until: float = 0.0
    last_error: str = ""
    probe_ok: bool | None = None


@dataclass
class UpstreamResult:
    """A backend's successful answer. For streams the body is still open: iterate ``chunks``."""

    response: Response
    target: Target
    endpoint: str
    content: bytes = b""
    first_chunk: bytes = b""
    chunks: Iterator[bytes] | None = None

    def close(self) -> None:
        self.response.close()


class _Failure:
    __slots__ = ("body", "endpoint", "kind", "note", "status")

    def __init__(self, endpoint: str, kind: str, status: int = 0, body: bytes = b"", note: str = "") -> None:
        self.endpoint, self.kind, self.status, self.body, self.note = endpoint, kind, status, body, note

    def describe(self) -> str:
        return f"{self.endpoint} ({self.note or (f'HTTP {self.status}' if self.status else self.kind)})"


# What a service beyond the box says about the key it was sent: refused (401, 403) or rate limited (429).
_KEY_STATUSES = frozenset((401, 403, 429))


class Upstreams:
    def __init__(
        self,
        settings: ServiceSettings,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._clock = clock
        self._sleep = sleep
        self._clients: dict[str, httpx.Client] = {}
        self._pools: dict[str, Pool] = {}
        self._states: dict[str, EndpointState] = {}
        self._lock = threading.Lock()
        self.remote = RemoteAccess(metrics=self.metrics, clock=clock)

    def use_models(self, models: Sequence[ModelEntry]) -> None:
        """Load the keys and budgets of the engine: openai models among ``models``."""
        self.remote = RemoteAccess(models, self.metrics, clock=self._clock)

    # -- endpoint bookkeeping -----------------------------------------------------------------
    def pool(self, base_url: str) -> Pool:
        """The keep-alive pool that carries requests to one backend (the hot path)."""
        pool = self._pools.get(base_url)
        if pool is None:
            with self._lock:
                pool = self._pools.setdefault(base_url, Pool(
                    base_url, self.settings.inflight_limit + 4, idle_seconds=self.settings.engine_idle_seconds))
        return pool

    def client(self, base_url: str) -> httpx.Client:
        """An httpx client for the same backend, for probes (off the hot path)."""
        client = self._clients.get(base_url)
        if client is None:
            with self._lock:
                client = self._clients.get(base_url)
                if client is None:
                    pool = self.settings.inflight_limit + 4
                    client = httpx.Client(
                        base_url=base_url,
                        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
                        timeout=httpx.Timeout(self.settings.read_timeout, connect=self.settings.connect_timeout),
                        trust_env=False,
                        verify=tls.for_base_url(base_url),
                    )
                    self._clients[base_url] = client
        return client

    def state(self, endpoint: str) -> EndpointState:
        state = self._states.get(endpoint)
        if state is None:
            with self._lock:
                state = self._states.setdefault(endpoint, EndpointState())
        return state

    def is_cooled(self, endpoint: str) -> bool:
        return self.state(endpoint).cooled_until > self._clock()

    def record_success(self, endpoint: str) -> None:
        state = self.state(endpoint)
        if state.failures or state.cooled_until:
            state.failures, state.cooled_until, state.last_error = 0, 0.0, ""
            self.metrics.backend_cooled.labels(endpoint).set(0)

    def record_failure(self, endpoint: str, reason: str, *, counts_for_cooldown: bool = True) -> None:
        self.metrics.upstream_failures.labels(endpoint, reason).inc()
        state = self.state(endpoint)
        state.last_error = reason
        if not counts_for_cooldown:
            return
        state.failures += 1
        if state.failures >= self.settings.cooldown_failures and self.settings.cooldown_seconds > 0:
            state.cooled_until = self._clock() + self.settings.cooldown_seconds
            self.metrics.backend_cooled.labels(endpoint).set(1)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        now = self._clock()
        return {
            url: {
                "consecutive_failures": s.failures,
                "cooled_down_for_seconds": round(max(0.0, s.cooled_until - now), 1),
                "last_error": s.last_error or None,
            }
            for url, s in list(self._states.items())
        }

    def close(self) -> None:
        for client in list(self._clients.values()):
            client.close()
        for pool in list(self._pools.values()):
            pool.close()

    # -- calls --------------------------------------------------------------------------------
    def call(
        self,
        targets: Sequence[Target],
        path: str,
        build_body: BodyBuilder,
        *,
        deadline: float,
        stream: bool = False,
        forwarded: bool = False,
    ) -> UpstreamResult:
        """Try every target's endpoints in order until one answers 2xx; raise the best-fitting error.

        ``forwarded``: the request came from another gateway (``X-Vilms-Hop``); it is answered by
        this box's own engines or not at all."""
        failures: list[_Failure] = []
        plan = self._plan(targets, local_only=forwarded)
        if not plan and forwarded:
            raise UpstreamUnavailable(
                f"{targets[0].model.name!r} has no engine on this box, and the request was forwarded by "
                f"another gateway ({HOP_HEADER}): a forwarded request is never forwarded again.")
        bodies: dict[int, bytes] = {}
        for target_index, target, endpoint in plan:
            if target_index not in bodies:
                bodies[target_index] = build_body(target)
            if target.model.remote:
                result = self._try_remote(target, endpoint, path[3:] if path.startswith("/v1/") else path,
                                          bodies[target_index], deadline, stream, failures)
            else:
                result = self._try_endpoint(target, endpoint, path, bodies[target_index], deadline, stream, failures)
            if result is not None:
                if target_index > 0:
                    kind = "remote" if target.model.remote else "model"
                    self.metrics.fallbacks.labels(kind, targets[0].model.name, target.model.name).inc()
                elif endpoint != target.endpoints[0]:
                    self.metrics.fallbacks.labels("endpoint", target.model.name, target.model.name).inc()
                return result
        raise self._final_error(targets, failures)

    def _plan(self, targets: Sequence[Target], *, local_only: bool = False) -> list[tuple[int, Target, str]]:
        ready: list[tuple[int, Target, str]] = []
        cooled: list[tuple[int, Target, str]] = []
        remote_ready: list[tuple[int, Target, str]] = []
        remote_cooled: list[tuple[int, Target, str]] = []
        for i, target in enumerate(targets):
            remote = target.model.remote
            if remote and local_only:
                continue
            for endpoint in target.endpoints:
                if self.is_cooled(endpoint):
                    (remote_cooled if remote else cooled).append((i, target, endpoint))
                else:
                    (remote_ready if remote else ready).append((i, target, endpoint))
        # Cooled endpoints are a last resort: better a slow answer than none when all are cooling down.
        # Edge first: every endpoint of the box's own engines, cooled-down ones included, comes before
        # any engine: openai model; a request leaves the box only when the box cannot answer it.
        return ready + cooled + remote_ready + remote_cooled

    def _try_remote(
        self, target: Target, endpoint: str, path: str, body: bytes, deadline: float, stream: bool,
        failures: list[_Failure],
    ) -> UpstreamResult | None:
        """An engine: openai model: within its daily budget, with each usable key in turn."""
        name = target.model.name
        budget = self.remote.budgets.get(name)
        if budget is not None and not budget.take():
            failures.append(_Failure(endpoint, "budget_spent",
                                     note=f"its max-requests-per-day of {budget.limit} is spent for today"))
            return None
        result = self._with_keys(target, endpoint, path, body, deadline, stream, failures)
        if result is None and budget is not None:
            budget.give_back()
        return result

    def _with_keys(
        self, target: Target, endpoint: str, path: str, body: bytes, deadline: float, stream: bool,
        failures: list[_Failure],
    ) -> UpstreamResult | None:
        pool = self.remote.pool(target.model.name)
        if not len(pool):
            return self._try_endpoint(target, endpoint, path, body, deadline, stream, failures, head=HOP_LINE)
        for index in pool.usable():
            refused: list[int] = []
            result = self._try_endpoint(target, endpoint, path, body, deadline, stream, failures,
                                        head=pool.head(index) + HOP_LINE, key=(index, refused))
            if result is not None or not refused:
                return result  # answered, or failed for a reason another key would not change
        out = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in sorted(pool.out_reasons().items()))
        failures.append(_Failure(endpoint, "keys_out", note=f"every API key is out of use: {out or 'none usable'}"))
        return None

    def _try_endpoint(
        self,
        target: Target,
        endpoint: str,
        path: str,
        body: bytes,
        deadline: float,
        stream: bool,
        failures: list[_Failure],
        *,
        head: str = "",
        key: tuple[int, list[int]] | None = None,
    ) -> UpstreamResult | None:
        """``head``: extra request-head lines (a remote model's key and hop marker). ``key``: the index
        of the key in use and a list it is appended to when the service refuses the key."""
        pool = self.pool(endpoint)
        for attempt in range(self.settings.retries + 1):
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise UpstreamTimeout(
                    "The request deadline passed before a backend answered. Tried: "
                    + (", ".join(f.describe() for f in failures) or "none"),
                )
            try:
                response = pool.post(
                    path, body,
                    read_timeout=min(self.settings.read_timeout, remaining),
                    connect_timeout=min(self.settings.connect_timeout, remaining),
                    head=head,
                )
            except httpx.TransportError as exc:
                self._fail(failures, endpoint, failure_kind(exc))
                return None
            if response.content_encoding is not None:
                response.close()
                failures.append(_Failure(endpoint, "content_encoding", body=response.content_encoding.encode()))
                self.record_failure(endpoint, "content_encoding")
                return None
            status = response.status_code
            if status < 400:
                return self._accept(response, target, endpoint, stream, failures)
            content = self._read_quietly(response)
            if status in _KEY_STATUSES and target.model.remote:
                # Never relayed: a service's refusal may quote the key, and it is about our key,
                # not the client's request.
                failures.append(_Failure(endpoint, "key_refused", status))
                self.record_failure(endpoint, f"http_{status}", counts_for_cooldown=False)
                if key is not None:
                    self.remote.key_failover(target.model.name, key[0], status, response.headers.get("retry-after"))
                    key[1].append(status)
                return None
            if status == 429 or status >= 500:
                failure = _Failure(endpoint, "http_error", status, content)
                failures.append(failure)
                self.record_failure(endpoint, f"http_{status}", counts_for_cooldown=status != 429)
                if attempt < self.settings.retries:
                    with turns.waiting():
                        self._sleep(min(self._backoff(attempt, response), max(0.0, deadline - self._clock())))
                    continue
                return None
            if status == 404:
                # This endpoint lacks the model (not pulled yet); another host may have it.
                failures.append(_Failure(endpoint, "model_missing", status, content))
                self.record_failure(endpoint, "http_404", counts_for_cooldown=False)
                return None
            message = _upstream_message(content, status)
            if target.model.remote:
                message = self.remote.redact(target.model.name, message)
            raise InvalidRequest(message, status=status, code="upstream_rejected")
        return None

    def _accept(
        self, response: Response, target: Target, endpoint: str, stream: bool, failures: list[_Failure]
    ) -> UpstreamResult | None:
        try:
            if stream:
                chunks = response.iter_raw()
                first = next(chunks, b"")
                result = UpstreamResult(response, target, endpoint, first_chunk=first, chunks=chunks)
            else:
                result = UpstreamResult(response, target, endpoint, content=response.read())
                response.close()
        except httpx.TransportError as exc:
            response.close()
            self._fail(failures, endpoint, failure_kind(exc))
            return None
        self.record_success(endpoint)
        return result

    def _fail(self, failures: list[_Failure], endpoint: str, kind: str) -> None:
        failures.append(_Failure(endpoint, kind))
        self.record_failure(endpoint, kind)

    @staticmethod
    def _read_quietly(response: Response) -> bytes:
        try:
            return response.read()
        except httpx.HTTPError:
            return b""
        finally:
            response.close()

    def _backoff(self, attempt: int, response: Response) -> float:
        delay = self.settings.backoff_base * (2**attempt)
        retry_after = response.headers.get("retry-after") or ""
        if retry_after.replace(".", "", 1).isdigit():
            delay = max(delay, float(retry_after))
        return float(min(delay, self.settings.backoff_max))

    @staticmethod
    def _final_error(targets: Sequence[Target], failures: list[_Failure]) -> GatewayError:
        tried = ", ".join(f.describe() for f in failures) or "no endpoint"
        name = targets[0].model.name
        kinds = {f.kind for f in failures}
        statuses = [f.status for f in failures if f.status]
        if "content_encoding" in kinds:
            encoding = next(f.body for f in failures if f.kind == "content_encoding").decode("latin-1")
            return UpstreamError(
                f"The engine for {name!r} sent its answer with Content-Encoding {encoding!r}, an encoding the "
                f"gateway does not decode (it asks for identity). Tried: {tried}."
            )
        if kinds & TIMEOUT_KINDS and not statuses:
            return UpstreamTimeout(f"No backend for {name!r} answered in time. Tried: {tried}.")
        if statuses and all(s == 404 for s in statuses) and not kinds - {"model_missing"} - _UNREACHABLE:
            return ModelNotFound(
                f"The model {name!r} is configured but no backend has it (is it pulled?). Tried: {tried}.",
                param="model",
            )
        if "keys_out" in kinds or "budget_spent" in kinds:
            return UpstreamUnavailable(f"No backend for {name!r} could answer. Tried: {tried}.")
        if statuses and all(s == 429 for s in statuses):
            return UpstreamRateLimited(f"Every backend for {name!r} is rate limiting. Tried: {tried}.",
                                       headers={"Retry-After": "1"})
        if statuses:
            last = next(f for f in reversed(failures) if f.status)
            return UpstreamError(
                f"The backends for {name!r} failed: {_upstream_message(last.body, last.status)} Tried: {tried}."
            )
        return UpstreamUnavailable(f"No backend for {name!r} could be reached. Tried: {tried}.")


# Failures that say the endpoint could not be talked to at all (the others say it answered).
_UNREACHABLE = frozenset(("connect_error", "read_error", "write_error", "protocol_error", "transport_error"))


def _upstream_message(content: bytes, status: int) -> str:
    """The backend's own error text, whichever of the engines' error shapes it used."""
    try:
        data = json.loads(content)
    except ValueError:
        text = content.decode("utf-8", "replace").strip()[:300]
        return text or f"HTTP {status}"
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            return str(error.get("message") or error.get("detail") or f"HTTP {status}")
        if isinstance(error, str):
            return error
        if "message" in data:
            return str(data["message"])
    return f"HTTP {status}"
