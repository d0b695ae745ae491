"""Readiness: a background thread probes every backend endpoint; requests never wait on a probe.

Ollama's ``GET /`` says "Ollama is running" even when generation hangs, so Ollama is probed on
``/api/version``; vLLM on ``/health`` (200 with an empty body).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.upstream import Upstreams

log = logging.getLogger("vilms.health")
_PROBE_PATH = {"ollama": "/api/version", "vllm": "/health"}


@dataclass
class ProbeResult:
    ok: bool
    detail: str
    checked_at: float


class BackendProber:
    def __init__(
        self,
        endpoints: dict[str, str],
        upstreams: Upstreams,
        *,
        interval: float,
        timeout: float,
        clock: Callable[[], float] = time.time,
        remote: dict[str, str] | None = None,
    ) -> None:
        self._endpoints = endpoints  # base URL -> engine
        # engine: openai base URL -> model. Not probed: a cloud counts (and may rate limit) every
        # call, a probe every few seconds from every box included. What /health/ready shows of them
        # is what requests found: failures and cooldown.
        self._remote = remote or {}
        self._upstreams = upstreams
        self._interval = interval
        self._timeout = timeout
        self._clock = clock
        self._results: dict[str, ProbeResult] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and self._endpoints:
            self._thread = threading.Thread(target=self._run, name="vilms-prober", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._timeout + 1)

    def probe_all(self) -> None:
        for url, engine in self._endpoints.items():
            self._results[url] = self._probe(url, engine)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.probe_all()
            self._stop.wait(self._interval)

    def _probe(self, url: str, engine: str) -> ProbeResult:
        path = _PROBE_PATH[engine]
        try:
            response = self._upstreams.client(url).get(path, timeout=self._timeout)
            ok = response.status_code == 200
            detail = "ok" if ok else f"HTTP {response.status_code} on {path}"
        except httpx.HTTPError as exc:
            ok, detail = False, f"{type(exc).__name__} on {path}"
        metrics = self._upstreams.metrics
        metrics.backend_up.labels(url, engine).set(1 if ok else 0)
        if ok and self._upstreams.is_cooled(url):
            # A cooled-down endpoint that answers its probe is re-admitted before its cooldown ends.
            self._upstreams.record_success(url)
        return ProbeResult(ok, detail, self._clock())

    def report(self) -> tuple[bool, dict[str, Any]]:
        """``(ready, body)``: ready when at least one endpoint is up."""
        backends = {}
        cooldown = self._upstreams.snapshot()
        for url, engine in self._endpoints.items():
            result = self._results.get(url)
            backends[url] = {
                "engine": engine,
                "up": None if result is None else result.ok,
                "detail": "not probed yet" if result is None else result.detail,
                **cooldown.get(url, {}),
            }
        # Ready when the box's own engines are: peers and clouds are a fallback, not the box.
        ready = any(b["up"] for b in backends.values())
        body: dict[str, Any] = {"status": "ready" if ready else "unavailable", "backends": backends}
        if self._remote:
            body["remote"] = {
                url: {"engine": "openai", "model": model, "probed": False,
                      **cooldown.get(url, {"consecutive_failures": 0, "cooled_down_for_seconds": 0.0,
                                           "last_error": None})}
                for url, model in self._remote.items()
            }
        return ready, body
