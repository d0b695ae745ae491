"""What the gateway keeps about ``engine: openai`` models (peer boxes, cloud services): each one's
key pool and daily budget, and the event line and counter written when a key is taken out of use."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gateway.budget import DailyBudget
from gateway.config import ModelEntry
from gateway.keys import KeyPool, load_keys
from gateway.metrics import Metrics

# Sent with every request to an engine: openai model. A ViLMS gateway that receives it answers
# from its own engines only, so a request crosses at most one box boundary and never loops.
HOP_HEADER = "X-Vilms-Hop"
HOP_LINE = f"{HOP_HEADER}: 1\r\n"
HOP_ENVIRON = "HTTP_X_VILMS_HOP"  # the header as WSGI names it: one dict lookup, not req.get_header's work

EventSink = Callable[[dict[str, Any]], None]


class RemoteAccess:
    def __init__(
        self,
        models: Iterable[ModelEntry] = (),
        metrics: Metrics | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], datetime.date] = datetime.date.today,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._metrics = metrics or Metrics()
        remote = [m for m in models if m.remote]
        self.keys = {m.name: KeyPool(load_keys(m, environ), m.key_cooldown, clock) for m in remote}
        self.budgets = {m.name: DailyBudget(m.max_requests_per_day, today)
                        for m in remote if m.max_requests_per_day is not None}
        for name, budget in self.budgets.items():
            self._metrics.remote_requests_left.labels(name).set_function(budget.remaining)
        self.events: EventSink | None = None  # the access log's writer, once the app has one

    def pool(self, model: str) -> KeyPool:
        pool = self.keys.get(model)
        if pool is None:  # a model this access was not built with: no keys
            pool = self.keys.setdefault(model, KeyPool((), 0.0))
        return pool

    def key_failover(self, model: str, index: int, status: int, retry_after: str | None) -> None:
        pool = self.pool(model)
        reason, seconds = pool.take_out(index, status, retry_after)
        self._metrics.key_failovers.labels(model, reason).inc()
        if self.events is not None:
            self.events({
                "ts": round(time.time(), 3), "event": "key_failover", "model": model, "reason": reason,
                "status": status, "key": pool.shown(index), "out_for_seconds": round(seconds, 1),
            })

    def redact(self, model: str, text: str) -> str:
        return self.pool(model).redact(text)
