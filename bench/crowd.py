"""Crowds: ``.venv/bin/python -m bench.crowd`` drives 16, 64, 256 and 1,000 concurrent streams through
the gateway at its defaults and through LiteLLM, to an engine that accepts any number of them and
paces each answer (6 chunks 1 s apart, as a batching vLLM does for a short answer), then holds
2,000 idle keep-alive connections beside normal chat traffic.

Per crowd and target: streams finished, refused (429) and failed, the proxy's CPU seconds, its peak
resident memory, and time to the first token (p50/p99) beside the engine's own (``direct``). The
engine runs in its own process (asyncio, ``python -m bench.crowd engine``), pinned with the client to
one CPU; the proxy under test has the other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench import bodies, procstat, targets, wrkload
from bench.run import OUT, _cpus, _port, progress_log

CHUNKS = 6
GAP = 1.0
RAMP = 1.0  # the streams of a crowd start spread over this many seconds
CROWDS = (16, 64, 256, 1000)
IDLE = 2000
_VERSION = b'{"version":"0.12.0"}'
_STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


# -- the engine ------------------------------------------------------------------------------------

def _sse(event: str) -> bytes:
    data = f"data: {event}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _serve_engine_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HTTP/1.1 keep-alive: a GET answers the readiness probe; a POST with ``"stream": true`` is
    answered with CHUNKS events GAP seconds apart (the first at once), any other POST at once."""
    try:
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            length = 0
            for line in head.split("\r\n"):
                if line.startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            if head.startswith("get"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(_VERSION), _VERSION))
            elif b'"stream": true' in body or b'"stream":true' in body:
                writer.write(_STREAM_HEAD)
                for i in range(CHUNKS):
                    if i:
                        await asyncio.sleep(GAP)
                    writer.write(_sse(bodies._chunk({"content": f"tok{i} "}, None)))
                    await writer.drain()
                writer.write(_sse(bodies._chunk({}, "stop")) + _sse("[DONE]") + b"0\r\n\r\n")
            else:
                answer = bodies.chat_response().encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(answer), answer))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _engine_main(port: int) -> None:
    server = await asyncio.start_server(_serve_engine_connection, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the crowd -------------------------------------------------------------------------------------

async def _one_stream(port: int, path: str, body: bytes, start_at: float, out: list[tuple[str, float]]) -> None:
    await asyncio.sleep(start_at)
    started = time.perf_counter()
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
               f"Authorization: Bearer sk-bench\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    writer = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        status = int(head[9:12])
        if status != 200:
            out.append(("refused" if status == 429 else f"status {status}", 0.0))
            return
        seen = b""
        while b"data: {" not in seen:
            seen += await asyncio.wait_for(reader.read(65536), 60)
        ttft = time.perf_counter() - started
        while b"[DONE]" not in seen[-64:] and b"[DONE]" not in seen:
            data = await asyncio.wait_for(reader.read(65536), 60)
            if not data:
                raise ConnectionError("closed before [DONE]")
            seen = seen[-64:] + data
        out.append(("finished", ttft))
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
        out.append((f"error {type(exc).__name__}", 0.0))
    finally:
        if writer is not None:
            writer.close()


def crowd(port: int, path: str, streams: int) -> list[tuple[str, float]]:
    body = bodies.chat_request(bodies.STREAM_MODEL, True)
    out: list[tuple[str, float]] = []

    async def main() -> None:
        await asyncio.gather(*(_one_stream(port, path, body, RAMP * i / streams, out) for i in range(streams)))

    asyncio.run(main())
    return out


def _percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))], 1)


class _PeakRss:
    """Samples the resident memory of a process tree every 0.2 s until stopped: the peak."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, procstat.rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, procstat.rss_bytes(self.pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(max(self.peak, procstat.rss_bytes(self.pid)) / 2**20, 1)


def measure_crowd(name: str, target: targets.Target | None, engine_port: int, streams: int) -> dict[str, Any]:
    port = engine_port if target is None else int(target.url.rsplit(":", 1)[1])
    path = "/sse/v1/chat/completions" if target is None else "/v1/chat/completions"
    cpu_before = procstat.cpu_seconds(target.pid) if target else 0.0
    rss = _PeakRss(target.pid) if target else None
    started = time.monotonic()
    outcomes = crowd(port, path, streams)
    wall = time.monotonic() - started
    ttfts = [t * 1000 for kind, t in outcomes if kind == "finished"]
    counts: dict[str, int] = {}
    for kind, _ in outcomes:
        counts[kind] = counts.get(kind, 0) + 1
    return {
        "target": name, "streams": streams, "finished": counts.pop("finished", 0), "refused": counts.pop("refused", 0),
        "failed": counts, "wall_s": round(wall, 1),
        "cpu_s": round(procstat.cpu_seconds(target.pid) - cpu_before, 2) if target else None,
        "peak_rss_mb": rss.stop() if rss else None,
        "ttft_p50_ms": _percentile(ttfts, 50),
        "ttft_p99_ms": _percentile(ttfts, 99),
    }


# -- idle clients beside traffic --------------------------------------------------------------------

def _hold_idle(port: int, count: int, path: str) -> list[Any]:
    """``count`` keep-alive clients that asked once (``GET path``) and went quiet."""
    import socket

    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        if not sock.recv(65536).startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"{path} did not answer 200")
        held.append(sock)
    return held


def _still_open(held: list[Any]) -> int:
    import socket

    alive = 0
    for sock in held:
        sock.setblocking(False)
        try:
            alive += sock.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


def measure_idle(name: str, target: targets.Target, idle: int, seconds: float, load_cpu: int | None,
                 health_path: str) -> dict[str, Any]:
    url = target.url + "/v1/chat/completions"
    body = bodies.chat_request(bodies.CHAT_MODEL)
    port = int(target.url.rsplit(":", 1)[1])
    runs: dict[str, list[float]] = {"without": [], "with": []}
    cpu_us: dict[str, list[float]] = {"without": [], "with": []}
    held: list[Any] = []

    def load(side: str) -> None:
        before = procstat.cpu_seconds(target.pid)
        result = wrkload.run(url, body, connections=8, seconds=seconds, cpu=load_cpu)
        runs[side].append(result.p99_ms)
        cpu_us[side].append(round((procstat.cpu_seconds(target.pid) - before) / max(1, result.requests) * 1e6))

    try:
        for _ in range(3):  # alternate, so a slow phase of the host does not land on one side only
            load("without")
            held = _hold_idle(port, idle, health_path)
            load("with")
            alive = _still_open(held)
            for sock in held:
                sock.close()
            held = []
    finally:
        for sock in held:
            sock.close()
    # the best round of each side: interference only ever adds latency (bench/README.md, "Noise")
    without, with_idle = min(runs["without"]), min(runs["with"])
    return {"target": name, "idle": idle, "idle_still_open": alive, "chat_p99_ms_without": without,
            "chat_p99_ms_with": with_idle, "ratio": round(with_idle / without, 2) if without else None,
            "rounds": runs, "cpu_us_per_request": cpu_us}


# -- the whole scenario -----------------------------------------------------------------------------

def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| target | streams | finished | refused | failed | proxy CPU s | peak RSS MB | TTFT p50 ms "
             "| TTFT p99 ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        failed = sum(r["failed"].values())
        lines.append(f"| {r['target']} | {r['streams']} | {r['finished']} | {r['refused']} | {failed} | "
                     f"{r['cpu_s'] if r['cpu_s'] is not None else '-'} | "
                     f"{r['peak_rss_mb'] if r['peak_rss_mb'] is not None else '-'} | "
                     f"{r['ttft_p50_ms']} | {r['ttft_p99_ms']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.crowd")
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "engine"])
    parser.add_argument("--port", type=int, default=0, help="engine mode: the port to serve on")
    parser.add_argument("--crowds", default=",".join(map(str, CROWDS)))
    parser.add_argument("--idle", type=int, default=IDLE)
    parser.add_argument("--seconds", type=float, default=4.0, help="each chat load run beside idle clients")
    parser.add_argument("--no-litellm", action="store_true")
    args = parser.parse_args(argv)
    _raise_nofile()
    if args.mode == "engine":
        asyncio.run(_engine_main(args.port))
        return 0
    import subprocess

    log = progress_log()
    load_cpu, proxy_cpu = _cpus()
    engine_port = _port()
    engine = subprocess.Popen(targets._pinned([sys.executable, "-m", "bench.crowd", "engine", "--port",
                                               str(engine_port)], load_cpu), cwd=targets.ROOT)
    procs: dict[str, targets.Target] = {}
    results: dict[str, Any] = {"meta": {"loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
                                        "host_speed_ms_start": procstat.host_speed_ms()}}
    try:
        time.sleep(1.0)
        engine_url = f"http://127.0.0.1:{engine_port}"
        procs["gateway"] = targets.start_gateway(engine_url, _port(), proxy_cpu, threads=None, access_log=True)
        log(f"gateway at defaults ready in {procs['gateway'].ready_seconds:.2f} s, "
            f"{procstat.rss_bytes(procs['gateway'].pid) / 2**20:.1f} MB")
        if not args.no_litellm and targets.litellm_available():
            procs["litellm"] = targets.start_litellm(engine_url, _port(), proxy_cpu)
            log(f"litellm ready in {procs['litellm'].ready_seconds:.2f} s")
        results["idle_rss_mb"] = {name: round(procstat.rss_bytes(t.pid) / 2**20, 1) for name, t in procs.items()}
        rows = []
        for streams in map(int, args.crowds.split(",")):
            for name, target in [("direct", None), *procs.items()]:
                row = measure_crowd(name, target, engine_port, streams)
                log(json.dumps(row))
                rows.append(row)
        results["crowds"] = rows
        idle_rows = []
        for name, target in procs.items():
            health = "/health" if name == "gateway" else "/health/liveliness"
            idle_row = measure_idle(name, target, args.idle, args.seconds, load_cpu, health)
            log(json.dumps(idle_row))
            idle_rows.append(idle_row)
        results["idle"] = idle_rows
    finally:
        for target in procs.values():
            target.stop()
        engine.terminate()
        engine.wait(10)
    results["meta"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    results["meta"]["host_speed_ms_end"] = procstat.host_speed_ms()
    OUT.mkdir(exist_ok=True)
    (OUT / "crowd.json").write_text(json.dumps(results, indent=2))
    print(_table(results["crowds"]))
    print()
    print("| target | idle clients | still open | chat p99 ms without | with | ratio |\n|---|---|---|---|---|---|")
    for r in results["idle"]:
        print(f"| {r['target']} | {r['idle']} | {r['idle_still_open']} | {r['chat_p99_ms_without']} | "
              f"{r['chat_p99_ms_with']} | {r['ratio']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
