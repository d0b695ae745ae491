"""The benchmark's arithmetic (bench/stats.py, bench/ab.py): what RESULTS.md's tables are read from."""

from __future__ import annotations

from typing import Any

from bench import ab, stats


def _sample(rnd: int, target: str, p50: float, p99: float, cpu: float = 100.0) -> dict[str, Any]:
    return {"round": rnd, "kind": "chat", "conc": 8, "target": target, "requests": 1000, "errors": 0,
            "ok_rps": 1000.0, "p50_ms": p50, "p99_ms": p99, "proxy_cpu_us": cpu, "wrk_cpu_share": 0.2}


def test_added_latency_is_taken_against_the_direct_run_of_the_same_round() -> None:
    # Round 1 is a slow phase for everyone: the gateway's own cost is the same in both rounds.
    samples = [_sample(0, "direct", 1.0, 2.0), _sample(0, "gateway", 1.5, 3.0),
               _sample(1, "direct", 3.0, 9.0), _sample(1, "gateway", 3.5, 10.0),
               _sample(2, "direct", 1.0, 2.0), _sample(2, "gateway", 1.5, 3.0)]
    row = stats.aggregate_load(samples)["chat"]["8"]["gateway"]
    assert row["added_p50_ms"] == 0.5
    assert row["added_p99_ms"] == 1.0
    assert row["added_p99_best_ms"] == 1.0  # the quietest p99 against the median direct one
    assert row["rounds"] == 3 and row["requests"] == 3000


def test_a_side_by_side_shows_each_measure_before_and_after_with_its_change() -> None:
    samples = []
    for rnd in range(3):
        samples += [_sample(rnd, "direct", 1.0, 2.0), _sample(rnd, ab.BEFORE, 2.0, 5.0, cpu=200.0),
                    _sample(rnd, ab.AFTER, 1.5, 4.0, cpu=150.0)]
    table = ab.table(stats.aggregate_load(samples), samples).splitlines()
    assert len(table) == 3
    row = table[2]
    assert row.startswith("| chat | 8 | ")
    assert "200.0 -> 150.0 (-25%)" in row  # CPU per request
    assert "5.0 -> 4.0 (-20%)" in row  # p99
    assert "3.0 -> 2.0 (-33%)" in row  # added p99
    assert row.endswith("| -25% to -25% |")  # every round paired alike


def test_the_paired_cpu_changes_show_how_far_the_host_moved_a_change_between_rounds() -> None:
    cpus = [(200.0, 180.0), (200.0, 260.0), (100.0, 90.0), (300.0, 240.0)]  # -10%, +30%, -10%, -20%
    samples = []
    for rnd, (before, after) in enumerate(cpus):
        samples += [_sample(rnd, ab.BEFORE, 2.0, 5.0, cpu=before), _sample(rnd, ab.AFTER, 2.0, 5.0, cpu=after)]
    changes = ab.paired_cpu_changes(samples)[("chat", 8)]
    assert [round(change, 2) for change in changes] == [-0.1, 0.3, -0.1, -0.2]
