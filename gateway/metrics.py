"""Prometheus metrics, one registry per app so several apps (tests, benchmarks) never share counters."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "vilms_requests", "Requests answered, by route and status.", ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "vilms_request_duration_seconds", "Time to the response head (streams: to the first byte).",
            ["route"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.upstream_failures = Counter(
            "vilms_upstream_failures", "Failed tries against a backend endpoint, by reason.",
            ["endpoint", "reason"], registry=self.registry,
        )
        self.fallbacks = Counter(
            "vilms_fallbacks", "Requests served by a fallback model or a non-primary endpoint.",
            ["kind", "from_model", "to_model"], registry=self.registry,
        )
        self.backend_up = Gauge(
            "vilms_backend_up", "1 when the last readiness probe of the endpoint succeeded.",
            ["endpoint", "engine"], registry=self.registry,
        )
        self.backend_cooled = Gauge(
            "vilms_backend_cooled_down", "1 while the endpoint is skipped after repeated failures.",
            ["endpoint"], registry=self.registry,
        )
        self.embedding_loaded = Gauge(
            "vilms_embedding_model_loaded", "1 while the local embedding model is in memory.",
            registry=self.registry,
        )
        self.streams_interrupted = Counter(
            "vilms_streams_interrupted", "Streams ended with an error event after the first byte.",
            registry=self.registry,
        )

        # Beyond the box (engine: openai models) and per-model figures (docs/configuration.md).
        self.key_failovers = Counter(
            "vilms_key_failovers", "API keys of an engine: openai model taken out of use, by reason.",
            ["model", "reason"], registry=self.registry,
        )
        self.remote_requests_left = Gauge(
            "vilms_remote_requests_left_today", "What is left of an engine: openai model's max-requests-per-day.",
            ["model"], registry=self.registry,
        )
        self.model_requests = Counter(
            "vilms_model_requests", "Requests answered by a model, by the model asked for and the model that served.",
            ["requested", "served"], registry=self.registry,
        )
        self.model_latency = Histogram(
            "vilms_model_request_duration_seconds", "Time to the answer's head (streams: first byte), per model.",
            ["requested", "served"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.model_tokens = Counter(
            "vilms_model_tokens", "Tokens from the answers' usage (in: prompt, out: completion).",
            ["requested", "served", "direction"], registry=self.registry,
        )

        self.queue_depth = Gauge(
            "vilms_queue_depth", "Requests waiting for a request slot now.", registry=self.registry,
        )
        self.queue_wait = Histogram(
            "vilms_queue_wait_seconds", "Time requests waited for a request slot (those that queued).",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.queue_refused = Counter(
            "vilms_queue_refused", "Requests refused with 429 by the slot queue: full, or its wait ran out.",
            ["reason"], registry=self.registry,
        )

    def watch_queue(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(lambda: float(depth()))

    def queue_waited(self, seconds: float, outcome: str) -> None:
        """The slot queue's report for one request that found every slot busy."""
        if outcome != "full":
            self.queue_wait.observe(seconds)
        if outcome != "served":
            self.queue_refused.labels(outcome).inc()

    def watch_embedding(self, loaded: Callable[[], bool]) -> None:
        self.embedding_loaded.set_function(lambda: 1.0 if loaded() else 0.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
