"""Side by side: the gateway at another revision against this checkout, on the same backend, in
alternating rounds: ``.venv/bin/python -m bench.ab REV [--rounds 10] [--seconds 3] [--kind chat]``.

A full run cannot resolve a change of 10 to 20% on a host whose speed drifts by half within a
minute. Two gateways served at once, on the same CPU, and driven in turn, round after round, meet
the same drift: the medians of their differences can. REV is checked out with ``git worktree``
into a temporary directory and its ``gateway`` package is served by the project venv, so only the
gateway's code differs. Prints a markdown table and writes the samples as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench import crowd, procstat, stats, targets
from bench.backend import StaticBackend
from bench.run import KINDS, OUT, _cpus, _port, progress_log, run_load, wrk_missing

BEFORE, AFTER = "before", "after"
COLUMNS = (("proxy_cpu_us_per_req", "CPU us/req"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
           ("added_p99_ms", "added p99 ms"), ("ok_rps", "req/s"), ("switches_per_req", "switches/req"),
           ("rss_mb", "RSS MB"))


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(targets.ROOT), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def _change(before: float, after: float) -> str:
    return f"{(after - before) / before * 100:+.0f}%" if before else "-"


def paired_cpu_changes(samples: list[dict[str, Any]]) -> dict[tuple[str, int], list[float]]:
    """Per kind and concurrency, after's CPU per request over before's in each round, minus one:
    the two ran a few seconds apart, so their spread is what the host's drift leaves in a change."""
    by_round: dict[tuple[str, int, int], dict[str, float]] = {}
    for s in samples:
        by_round.setdefault((s["kind"], s["conc"], s["round"]), {})[s["target"]] = s["proxy_cpu_us"]
    out: dict[tuple[str, int], list[float]] = {}
    for (kind, conc, _), cpu in sorted(by_round.items()):
        if cpu.get(BEFORE) and AFTER in cpu:
            out.setdefault((kind, conc), []).append(cpu[AFTER] / cpu[BEFORE] - 1)
    return out


def _quartiles(values: list[float]) -> str:
    if len(values) < 2:
        return "-"
    low, _, high = statistics.quantiles(values, n=4)
    return f"{low * 100:+.0f}% to {high * 100:+.0f}%"


def table(load: dict[str, Any], samples: list[dict[str, Any]]) -> str:
    """One row per kind and concurrency: before -> after (change) for each measure, and the middle
    half of the rounds' paired CPU changes: a change not much larger than that spread is not resolved."""
    titles = [title for _, title in COLUMNS] + ["CPU change, middle half of rounds"]
    lines = ["| kind | c | " + " | ".join(titles) + " |", "|---|---|" + "---|" * len(titles)]
    paired = paired_cpu_changes(samples)
    for kind, by_conc in load.items():
        for conc, rows in by_conc.items():
            if BEFORE not in rows or AFTER not in rows:
                continue
            cells = [f"{rows[BEFORE].get(key)} -> {rows[AFTER].get(key)} "
                     f"({_change(rows[BEFORE].get(key, 0), rows[AFTER].get(key, 0))})" for key, _ in COLUMNS]
            cells.append(_quartiles(paired.get((kind, int(conc)), [])))
            lines.append(f"| {kind} | {conc} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("rev", help="the revision to compare this checkout against (a commit, tag or branch)")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds (default 10)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per wrk run (default 3)")
    parser.add_argument("--kind", choices=sorted(KINDS), action="append",
                        help="what to load (repeatable; default chat)")
    parser.add_argument("--idle", type=int, default=0,
                        help="idle keep-alive clients held open on each gateway beside the load (opened anew "
                             "every round: the gateway closes them after its idle timeout)")
    parser.add_argument("--out", type=Path, default=OUT / "ab.json")
    args = parser.parse_args(argv)
    if wrk_missing():
        return 2
    kinds = {kind: KINDS[kind] for kind in args.kind or ["chat"]}
    commit = _git("rev-parse", "--verify", f"{args.rev}^{{commit}}")
    load_cpu, proxy_cpu = _cpus()
    log = progress_log()

    crowd._raise_nofile()
    meta: dict[str, Any] = {"before": commit, "after": _git("rev-parse", "HEAD"), "idle": args.idle,
                            "after_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
                            "rounds": args.rounds, "seconds": args.seconds,
                            "host_speed_ms_start": procstat.host_speed_ms()}
    workdir = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    tree = workdir / "tree"
    _git("worktree", "add", "--detach", str(tree), commit)
    backend: StaticBackend | None = None
    procs: dict[str, targets.Target | None] = {"direct": None}
    try:
        backend = StaticBackend(_port(), cpu=load_cpu).start()
        log(f"starting the gateway at {commit[:12]} and this checkout's")
        procs[BEFORE] = targets.start_gateway(backend.url, _port(), proxy_cpu, name=BEFORE, source=tree)
        procs[AFTER] = targets.start_gateway(backend.url, _port(), proxy_cpu, name=AFTER)
        held: list[Any] = []

        def hold_idle_clients(rnd: int) -> None:
            for sock in held:
                sock.close()
            held.clear()
            for name in (BEFORE, AFTER):
                target = procs[name]
                assert target is not None
                held.extend(crowd._hold_idle(int(target.url.rsplit(":", 1)[1]), args.idle, "/health"))

        samples = run_load(procs, backend, rounds=args.rounds, seconds=args.seconds, load_cpu=load_cpu,
                           log=log, kinds=kinds, before_round=hold_idle_clients if args.idle else None)
        for sock in held:
            sock.close()
    finally:
        for proc in procs.values():
            if proc is not None:
                proc.stop()
        if backend is not None:
            backend.stop()
        _git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(workdir, ignore_errors=True)
    meta["host_speed_ms_end"] = procstat.host_speed_ms()
    load = stats.aggregate_load(samples)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "load": load, "samples": samples}, indent=2))
    dirty = " (with uncommitted changes)" if meta["after_dirty"] else ""
    print(f"before {commit[:12]}, after {meta['after'][:12]}{dirty}; host speed {meta['host_speed_ms_start']} / "
          f"{meta['host_speed_ms_end']} ms; medians of {args.rounds} rounds\n")
    print(table(load, samples))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
