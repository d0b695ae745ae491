"""The markdown tables printed at the end of a run (and pasted into RESULTS.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return "-" if value is None else str(value)


def _table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    return [
        "", f"## {title}", "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows),
    ]


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = _table(
        f"Load (wrk, {meta['rounds']} rounds x {meta['seconds']} s, medians)",
        ["kind", "c", "target", "req/s", "p50 ms", "p99 ms", "added p50", "added p99", "added p99 best round",
         "proxy CPU us/req", "switches/req", "main thread share", "errors", "wrk CPU share"],
        [(kind, conc, target, r["ok_rps"], r["p50_ms"], r["p99_ms"], r.get("added_p50_ms"), r.get("added_p99_ms"),
          r.get("added_p99_best_ms"), *((r["proxy_cpu_us_per_req"], r.get("switches_per_req"),
                                         r.get("main_thread_share")) if target != "direct" else (None,) * 3),
          r["errors"], r["wrk_cpu_share"])
         for kind, by_conc in results.get("load", {}).items()
         for conc, rows in by_conc.items()
         for target, r in rows.items()],
    )[1:]  # the first table opens the report: no blank line before it
    if results.get("ratios"):
        lines += _table("Gateway vs LiteLLM", ["kind@c", "throughput x", "CPU/req x less", "added p50 x less"],
                        [(key, r["throughput_x"], r["cpu_per_req_x_less"], r["added_p50_x_less"])
                         for key, r in results["ratios"].items()])
    if results.get("stream_timing"):
        lines += _table("Streamed chat at c=1 (20 chunks, raw-socket client)",
                        ["target", "TTFT p50 ms", "TTFT p99 ms", "last byte p50 ms", "last byte p99 ms", "streams",
                         "failures"],
                        [(target, r["ttft_p50_ms"], r["ttft_p99_ms"], r["last_byte_p50_ms"], r["last_byte_p99_ms"],
                          r["streams"], r["failures"]) for target, r in results["stream_timing"].items()])
    if results.get("startup"):
        lines += _table("Start-up and memory",
                        ["target", "ready s", "idle RSS MB", "RSS after load MB", "first embedding s",
                         "RSS with model MB"],
                        [(target, r.get("ready_s"), r.get("idle_rss_mb"), r.get("after_load_rss_mb"),
                          r.get("first_embedding_s"), r.get("model_loaded_rss_mb"))
                         for target, r in results["startup"].items()])
    emb = results.get("local_embeddings", {}).get("batches")
    if emb:
        lines += _table("Local embeddings (sentences/s, from each side's median call)",
                        ["batch", "gateway (float)", "gateway (base64)", "in-process", "ratio float", "ratio base64",
                         "calls each"],
                        [(batch, r["gateway_sentences_per_s"], r.get("gateway_base64_sentences_per_s"),
                          r["inprocess_sentences_per_s"], r["ratio"], r.get("ratio_base64"), r.get("calls"))
                         for batch, r in emb.items()])
    for name, checks in results.get("verdicts", {}).items():
        lines += _table(f"Targets ({name})", ["target", "measured", "limit", "verdict"],
                        [(c["target"], c["measured"], c["limit"], c["verdict"]) for c in checks])
    if "host_speed_ms_start" in meta:
        lines += ["", f"Host speed (`sum(range(10**6))`, best of 5): {meta['host_speed_ms_start']} ms at the start, "
                      f"{meta.get('host_speed_ms_end', '-')} ms at the end. CPU per request moves with it."]
    return "\n".join(lines) + "\n"
