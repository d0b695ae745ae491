"""The gateway with the changes bench/RESULTS.md proposes, applied as patches at start-up so they
can be measured beside the shipped code (``python -m bench.run --proposed``) and checked against the
test suite (``pytest -p bench.pytest_proposed``).

bench/ must not change gateway/: the lead ports these into gateway/upstream.py (+ a new
gateway/httpclient.py from bench/fastclient.py), gateway/resources/limits.py, gateway/server.py and
gateway/cli.py. BENCH_PATCHES (a comma list) picks which apply (default: RECOMMENDED), to measure
each one's share. ``accesslog`` and ``gcfreeze`` were tried and are not proposed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

import httpx

from gateway import middleware, upstream
from gateway.errors import InvalidRequest, ServerBusy
from gateway.resources import limits

ALL = ("transport", "fastclient", "limiter", "accesslog", "drain", "errors", "gcfreeze", "threads")
# accesslog saves only ~30-50 us/request and bypasses logging (tests read vilms.access records): not proposed.
RECOMMENDED = ("transport", "fastclient", "limiter", "drain", "errors", "threads")
_FAST = False


def _enabled() -> set[str]:
    raw = os.environ.get("BENCH_PATCHES", ",".join(RECOMMENDED))
    return {p.strip() for p in raw.split(",") if p.strip()}


# -- 1. upstream: send through the pooled transport, not httpx.Client --------------------------
# Client.send costs ~140 us of CPU per call on top of the transport: URL merging in build_request,
# cookie-jar extraction of every response (a urllib Request per call), auth and redirect plumbing.
# The gateway uses none of them. Same pool, same timeouts, same exceptions (the transport maps
# httpcore errors to httpx ones, for the body stream too).
def _transport(self: upstream.Upstreams, base_url: str) -> tuple[httpx.BaseTransport, str]:
    cache: dict[str, tuple[httpx.BaseTransport, str]] = self.__dict__.setdefault("_transports", {})
    found = cache.get(base_url)
    if found is None:
        with self._lock:
            found = cache.get(base_url)
            if found is None:
                pool = self.settings.threads + 4
                transport = self._transport or httpx.HTTPTransport(
                    limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool))
                found = (transport, base_url.rstrip("/"))
                cache[base_url] = found
    return found


def _send(self: upstream.Upstreams, endpoint: str, path: str, body: bytes, timeout: float,
          connect: float) -> Any:
    if _FAST and self._transport is None:  # tests inject httpx transports; keep those on httpx
        return _pool(self, endpoint).post(path, body, read_timeout=timeout, connect_timeout=connect)
    transport, prefix = _transport(self, endpoint)
    request = httpx.Request(
        "POST", prefix + path, content=body, headers={"content-type": "application/json"},
        extensions={"timeout": {"connect": connect, "read": timeout, "write": timeout, "pool": timeout}},
    )
    response = transport.handle_request(request)
    response.request = request
    return response


def _pool(self: upstream.Upstreams, base_url: str) -> Any:
    from bench.fastclient import Pool

    pools: dict[str, Pool] = self.__dict__.setdefault("_pools", {})
    found = pools.get(base_url)
    if found is None:
        with self._lock:
            found = pools.setdefault(base_url, Pool(base_url, self.settings.threads + 4))
    return found


# -- 1b. fastclient: http.client instead of httpcore under it (bench/fastclient.py) ------------
def patch_fastclient() -> None:
    global _FAST
    _FAST = True


def patch_transport() -> None:
    original = upstream.Upstreams._try_endpoint

    def _try_endpoint(self: upstream.Upstreams, target: Any, endpoint: str, path: str, body: bytes,
                      deadline: float, stream: bool, failures: list[Any]) -> Any:
        settings = self.settings
        for attempt in range(settings.retries + 1):
            remaining = deadline - self._clock()
            if remaining <= 0:
                return original(self, target, endpoint, path, body, deadline, stream, failures)  # raises
            try:
                response = _send(self, endpoint, path, body, min(settings.read_timeout, remaining),
                                 min(settings.connect_timeout, remaining))
            except httpx.TimeoutException as exc:
                self._fail(failures, endpoint, "connect_timeout" if isinstance(exc, httpx.ConnectTimeout)
                           else "timeout")
                return None
            except httpx.TransportError:
                self._fail(failures, endpoint, "connection_error")
                return None
            status = response.status_code
            if status < 400:
                return self._accept(response, target, endpoint, stream, failures)
            content = self._read_quietly(response)
            if status == 429 or status >= 500:
                failures.append(upstream._Failure(endpoint, "http_error", status, content))
                self.record_failure(endpoint, f"http_{status}", counts_for_cooldown=status != 429)
                if attempt < settings.retries:
                    self._sleep(min(self._backoff(attempt, response), max(0.0, deadline - self._clock())))
                    continue
                return None
            if status == 404:
                failures.append(upstream._Failure(endpoint, "model_missing", status, content))
                self.record_failure(endpoint, "http_404", counts_for_cooldown=False)
                return None
            raise InvalidRequest(upstream._upstream_message(content, status), status=status,
                                          code="upstream_rejected")
        return None

    upstream.Upstreams._try_endpoint = _try_endpoint  # type: ignore[method-assign]
    close = upstream.Upstreams.close

    def _close(self: upstream.Upstreams) -> None:
        close(self)
        for transport, _ in self.__dict__.get("_transports", {}).values():
            transport.close()
        for pool in self.__dict__.get("_pools", {}).values():
            pool.close()

    upstream.Upstreams.close = _close  # type: ignore[method-assign]


# -- 2. limiter: wait briefly for a slot instead of answering 429 at once ----------------------
# With threads=16 and 15 slots, a burst of 32 fast requests puts a 16th thread on a chat request
# while 15 are between send and receive: an instant 429 although the slot frees within a
# millisecond. A short wait turns those 429s into ordinary queueing and keeps /health answerable:
# with every slot held by a wedged backend, /health waits at most SLOT_WAIT per chat request queued
# ahead of it, so the wait must stay short.
SLOT_WAIT = 0.05


def patch_limiter() -> None:
    def acquire(self: limits.InflightLimiter) -> None:
        if not self._slots.acquire(timeout=SLOT_WAIT):
            raise ServerBusy(f"All {self.limit} request slots are busy; retry shortly.",
                             headers={"Retry-After": "1"})

    limits.InflightLimiter.acquire = acquire  # type: ignore[method-assign]


# -- 3. access log: one buffered write, flushed by a timer, instead of logging's per-record path --
# logging builds a LogRecord, takes two locks and flushes stdout (a write syscall) per request.
def patch_accesslog() -> None:
    lock = threading.Lock()
    pending: list[str] = []

    def flusher() -> None:
        while True:
            time.sleep(0.2)
            if pending:
                with lock:
                    lines, pending[:] = pending[:], []
                sys.stdout.write("".join(lines))
                sys.stdout.flush()

    threading.Thread(target=flusher, name="access-log", daemon=True).start()
    original = middleware.AccessLogMiddleware.process_response

    def process_response(self: middleware.AccessLogMiddleware, req: Any, resp: Any, resource: object,
                         req_succeeded: bool) -> None:
        if not self._enabled:
            return original(self, req, resp, resource, req_succeeded)
        started = getattr(req.context, "started", None)
        elapsed = time.perf_counter() - started if started is not None else 0.0
        route = req.uri_template or "unmatched"
        status = resp.status_code
        self._metrics.requests.labels(route, str(status)).inc()
        self._metrics.latency.labels(route).observe(elapsed)
        ctx = req.context
        entry = {"ts": round(time.time(), 3), "request_id": ctx.get("request_id"), "method": req.method,
                 "path": req.path, "status": status, "ms": round(elapsed * 1000, 2), "client": req.remote_addr}
        for key in ("model", "served_model", "endpoint", "stream"):
            value = ctx.get(key)
            if value is not None:
                entry[key] = value
        line = json.dumps(entry) + "\n"
        with lock:
            pending.append(line)
        return None

    middleware.AccessLogMiddleware.process_response = process_response  # type: ignore[method-assign]


# -- 4. drain: close keep-alive connections on SIGTERM ----------------------------------------
# server.serve() stops accepting but keeps serving every request that arrives on an open keep-alive
# connection, so under steady load (OpenAI clients keep connections alive) the drain never ends:
# after drain-seconds the process exits with requests in flight and their clients get a ReadError.
# Fix: from SIGTERM on, answer every request with "Connection: close", close idle connections, and
# finish when no request is in flight and no client connection is left.
def patch_drain() -> None:
    from waitress.channel import HTTPChannel

    from gateway import server as gw_server

    def close_after_current(server: Any) -> int:
        """Event-loop thread only (via the trigger). Returns the client connections still open."""
        open_channels = 0
        for channel in list(server._map.values()):
            if not isinstance(channel, HTTPChannel):
                continue
            open_channels += 1
            with channel.requests_lock:
                if channel.requests:
                    for request in channel.requests:  # waitress reads this when it writes the head
                        request.headers["CONNECTION"] = "close"
                elif channel.request is None and not channel.total_outbufs_len:
                    channel.will_close = True  # idle keep-alive: closed on the loop's next pass
        return open_channels

    def _drain(server: Any, tracker: Any, limit: float) -> None:
        deadline = time.monotonic() + limit
        state = {"open": 1}

        def mark() -> None:
            state["open"] = close_after_current(server)

        while time.monotonic() < deadline:
            server.trigger.pull_trigger(mark)
            time.sleep(0.05)
            if tracker.count == 0 and state["open"] == 0:
                break
        else:
            gw_server.log.warning("drain limit of %.0f s reached with %d request(s) in flight", limit, tracker.count)
        os.kill(os.getpid(), signal.SIGINT)

    gw_server._drain = _drain


# -- 5. errors: waitress's own 4xx in OpenAI's shape -------------------------------------------
# waitress answers malformed HTTP and bodies over max_request_body_size itself, in text/plain,
# before the app runs: an oversized image upload gets "Request Entity Too Large ... (generated by
# vilms-gateway)" instead of the JSON error every other 4xx has.
def patch_errors() -> None:
    from waitress import utilities

    def to_response(self: Any, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
        kind = "invalid_request_error" if self.code < 500 else "api_error"
        message = f"{self.reason}: {self.body}" if self.body else self.reason
        body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()
        return f"{self.code} {self.reason}", [("Content-Type", "application/json")], body

    utilities.Error.to_response = to_response


# -- 6. gcfreeze: keep start-up objects out of the cyclic GC's full collections -------------------
# Every request allocates container objects; each ~700 net allocations trigger a young collection and
# every 10th of those an older one, and full collections walk every object the imports created.
def patch_gcfreeze() -> None:
    import gc

    from gateway import server as gw_server

    original = gw_server.serve

    def serve(gateway: Any, **kwargs: Any) -> None:
        gc.collect()
        gc.freeze()  # what is alive now (modules, config, app) is never scanned again
        original(gateway, **kwargs)

    gw_server.serve = serve


# -- 7. threads: --threads also sizes the request slots and the upstream pools ---------------------
# `serve --threads 3` with no `threads:` in the file left the limiter at 15 slots (16 - 1): every
# waitress thread could then sit on a wedged backend and /health waited for a 504 to free one.
def patch_threads() -> None:
    import dataclasses

    from gateway import cli

    original = cli._serve

    def _serve(config: Any, args: Any) -> int:
        if args.threads:
            config = dataclasses.replace(config, service=dataclasses.replace(config.service, threads=args.threads))
        return original(config, args)

    cli._serve = _serve


def main() -> int:
    enabled = _enabled()
    for name in ALL:
        if name in enabled:
            globals()[f"patch_{name}"]()
    from gateway.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
