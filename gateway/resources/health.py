"""GET /health (and /health_check for old clients), GET /health/ready, GET /metrics."""

from __future__ import annotations

import json

import falcon

from gateway.health import BackendProber
from gateway.metrics import Metrics

_OK = json.dumps({"status": "ok"}).encode()


class HealthResource:
    """Liveness: answers as long as the process serves HTTP; never touches a backend."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data = _OK
        resp.content_type = falcon.MEDIA_JSON


class ReadyResource:
    """Readiness from the probes, plus ``auth``: "off" tells a monitor this box serves anyone."""

    def __init__(self, prober: BackendProber, *, auth: bool) -> None:
        self._prober = prober
        self._auth = "on" if auth else "off"

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        ready, body = self._prober.report()
        body["auth"] = self._auth
        resp.status = falcon.HTTP_200 if ready else falcon.HTTP_503
        resp.data = json.dumps(body).encode()
        resp.content_type = falcon.MEDIA_JSON


class MetricsResource:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data = self._metrics.render()
        resp.content_type = self._metrics.content_type
