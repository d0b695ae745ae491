"""The markdown tables printed at the end of a run (and pasted into RESULTS.md)."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return "-" if value is None else str(value)


def markdown(results: dict[str, Any]) -> str:
    lines = [f"## Load (wrk, {results['meta']['rounds']} rounds x {results['meta']['seconds']} s, medians)", "",
             "| kind | c | target | req/s | p50 ms | p99 ms | added p50 | added p99 | added p99 best round |"
             " proxy CPU us/req | errors | wrk CPU share |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for kind, by_conc in results.get("load", {}).items():
        for conc, rows in by_conc.items():
            for target, r in rows.items():
                lines.append("| " + " | ".join(_fmt(v) for v in (
                    kind, conc, target, r["ok_rps"], r["p50_ms"], r["p99_ms"], r.get("added_p50_ms"),
                    r.get("added_p99_ms"), r.get("added_p99_best_ms"),
                    r["proxy_cpu_us_per_req"] if target != "direct" else None,
                    r["errors"], r["wrk_cpu_share"])) + " |")
    if results.get("ratios"):
        lines += ["", "## Gateway vs LiteLLM", "", "| kind@c | throughput x | CPU/req x less | added p50 x less |",
                  "|---|---|---|---|"]
        for key, r in results["ratios"].items():
            lines.append(f"| {key} | {_fmt(r['throughput_x'])} | {_fmt(r['cpu_per_req_x_less'])} | "
                         f"{_fmt(r['added_p50_x_less'])} |")
    if results.get("stream_timing"):
        lines += ["", "## Streamed chat at c=1 (20 chunks, raw-socket client)", "",
                  "| target | TTFT p50 ms | TTFT p99 ms | last byte p50 ms | last byte p99 ms | streams | failures |",
                  "|---|---|---|---|---|---|---|"]
        for target, r in results["stream_timing"].items():
            lines.append(f"| {target} | {_fmt(r['ttft_p50_ms'])} | {_fmt(r['ttft_p99_ms'])} | "
                         f"{_fmt(r['last_byte_p50_ms'])} | {_fmt(r['last_byte_p99_ms'])} | {r['streams']} | "
                         f"{r['failures']} |")
    if results.get("startup"):
        lines += ["", "## Start-up and memory", "",
                  "| target | ready s | idle RSS MB | RSS after load MB | first embedding s | RSS with model MB |",
                  "|---|---|---|---|---|---|"]
        for target, r in results["startup"].items():
            lines.append(f"| {target} | {_fmt(r.get('ready_s'))} | {_fmt(r.get('idle_rss_mb'))} | "
                         f"{_fmt(r.get('after_load_rss_mb'))} | {_fmt(r.get('first_embedding_s'))} | "
                         f"{_fmt(r.get('model_loaded_rss_mb'))} |")
    emb = results.get("local_embeddings", {}).get("batches")
    if emb:
        lines += ["", "## Local embeddings (sentences/s)", "",
                  "| batch | gateway (float) | gateway (base64) | in-process | ratio float | ratio base64 |",
                  "|---|---|---|---|---|---|"]
        for batch, r in emb.items():
            lines.append(f"| {batch} | {_fmt(r['gateway_sentences_per_s'])} | "
                         f"{_fmt(r.get('gateway_base64_sentences_per_s'))} | {_fmt(r['inprocess_sentences_per_s'])} "
                         f"| {_fmt(r['ratio'])} | {_fmt(r.get('ratio_base64'))} |")
    for name, checks in results.get("verdicts", {}).items():
        lines += ["", f"## Targets ({name})", "", "| target | measured | limit | verdict |", "|---|---|---|---|"]
        for c in checks:
            lines.append(f"| {c['target']} | {_fmt(c['measured'])} | {_fmt(c['limit'])} | {c['verdict']} |")
    return "\n".join(lines) + "\n"
