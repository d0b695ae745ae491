"""Run the project's tests with bench/proposed.py's patches applied, to check the proposed hot-path
changes keep every behaviour: ``.venv/bin/python -m pytest -p bench.pytest_proposed tests/``.
BENCH_PATCHES picks the patches, as for the benchmark."""

from __future__ import annotations

from typing import Any

from bench import proposed


def pytest_configure(config: Any) -> None:
    for name in proposed.ALL:
        if name in proposed._enabled():
            getattr(proposed, f"patch_{name}")()
