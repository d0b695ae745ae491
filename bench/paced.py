"""A backend that streams 20 SSE chunks 20 ms apart, to check the gateway relays each as it arrives
(waitress has a history of buffering streamed output) rather than in one burst at the end."""

from __future__ import annotations

import itertools
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from bench import bodies

GAP = 0.02


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # readiness probe: /sse/api/version
        payload = b'{"version":"0.12.0"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        events = [e + "\n\n" for e in bodies.stream_response().split("\n\n") if e]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for event in events:
            self.wfile.write(event.encode())
            self.wfile.flush()
            time.sleep(GAP)
        self.close_connection = True


class PacedBackend:
    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> PacedBackend:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def arrivals(url: str, model: str = bodies.STREAM_MODEL) -> list[float]:
    """Seconds from sending to each data event's arrival."""
    times: list[float] = []
    started = time.perf_counter()
    with httpx.stream("POST", url, timeout=10, content=bodies.chat_request(model, True),
                      headers={"content-type": "application/json"}) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                times.append(time.perf_counter() - started)
    return times


def check(url: str, streams: int = 3) -> dict[str, Any]:
    """Paced when the first event arrives long before the last and most gaps follow the backend's."""
    runs = [arrivals(url) for _ in range(streams)]
    paced_runs = 0
    for times in runs:
        gaps = [b - a for a, b in itertools.pairwise(times)]
        if times and times[0] < 0.25 * times[-1] and sum(g > GAP / 2 for g in gaps) >= 0.8 * len(gaps):
            paced_runs += 1
    last = runs[-1]
    return {"paced": paced_runs == streams, "events": len(last), "first_event_ms": round(last[0] * 1000, 1),
            "last_event_ms": round(last[-1] * 1000, 1), "backend_gap_ms": GAP * 1000}
