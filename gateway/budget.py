"""The spending guard of an ``engine: openai`` model: at most ``max-requests-per-day`` requests a
local day. A request counts when it is sent; one the service does not answer with a 2xx is given
back, so outages and refused keys spend nothing."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable


class DailyBudget:
    def __init__(self, limit: int, today: Callable[[], datetime.date] = datetime.date.today) -> None:
        self.limit = limit
        self._today = today  # date.today() is the local date: the budget turns over at local midnight
        self._day = today()
        self._used = 0
        self._lock = threading.Lock()

    def _turn_over(self) -> None:
        day = self._today()
        if day != self._day:
            self._day, self._used = day, 0

    def take(self) -> bool:
        """Spend one request; False when today's budget is spent."""
        with self._lock:
            self._turn_over()
            if self._used >= self.limit:
                return False
            self._used += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._used = max(0, self._used - 1)

    def remaining(self) -> int:
        with self._lock:
            self._turn_over()
            return max(0, self.limit - self._used)
