"""The HTTP plumbing both stand-ins share: request parsing, faults, streaming, control API, server loop.

A stand-in is an `App` (routes + error shape + state); `Handler` turns HTTP/1.1 requests into calls
on it, and `Runner` serves it on a background thread that can be stopped and restarted on the same
port, dropping open keep-alive connections so a stopped server looks like a dead host.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .common import Fault, FaultState, RequestLog, Settings, dumps

CONTROL_PREFIX = "/_standin/"


class Abort(Exception):
    """Drop the connection now, without (the rest of) a response."""


class App:
    """What a stand-in implements. State lives here so it survives a stop/start of the server."""

    kind = "standin"
    server_header: str | None = None
    json_type = "application/json; charset=utf-8"  # gin's; FastAPI (vLLM) omits the charset

    def __init__(self, name: str, settings: Settings, env: dict[str, str] | None = None,
                 keep_alive_seconds: float | None = None) -> None:
        self.name = name
        # How long a kept-alive connection may sit idle after an answer before the server closes it;
        # None keeps it until the server stops. Each stand-in sets its engine's real value.
        self.keep_alive_seconds = keep_alive_seconds
        self.settings = settings
        self.env = dict(env or {})
        self.faults = FaultState()
        self.log = RequestLog()

    def route(self, h: Handler, method: str, path: str, body: Any) -> None:
        raise NotImplementedError

    def send_error(self, h: Handler, status: int, message: str, path: str) -> None:
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "settings": self.settings.as_dict(), "env": self.env}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; streams use chunked transfer encoding
    server: _Server

    # -- plumbing --------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        # Small SSE chunks must leave at the pace they are written, not when Nagle decides.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        """Requests one after another on the connection; between them, an idle one is closed after
        the app's ``keep_alive_seconds``, as uvicorn's keep-alive timeout does (a FIN, no answer)."""
        self.close_connection = True
        self.handle_one_request()
        idle = self.server.app.keep_alive_seconds
        while not self.close_connection:
            if idle is not None:
                self.connection.settimeout(idle)  # parse_request lifts it once a request line came
            self.handle_one_request()  # a timeout here: "Request timed out", close_connection set

    def parse_request(self) -> bool:
        self.connection.settimeout(None)
        return super().parse_request()

    def version_string(self) -> str:
        return self.server.app.server_header or ""

    def send_response(self, code: int, message: str | None = None) -> None:
        self.log_request(code)
        self.send_response_only(code, message)
        if self.server.app.server_header:
            self.send_header("Server", self.server.app.server_header)
        self.send_header("Date", self.date_time_string())

    def end_headers(self) -> None:
        app = self.server.app
        self.send_header("X-Standin-Server", app.name)
        self.send_header("X-Standin-Env", json.dumps(app.env, separators=(",", ":")))
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"[{self.server.app.name}] {self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_OPTIONS(self) -> None:
        self._handle("OPTIONS")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self, method: str) -> None:
        app = self.server.app
        self.cut: Fault | None = None
        self.extra_headers = {}
        self._events = 0
        try:
            raw = self._read_body()
            path = self.path.split("?", 1)[0]
            self.body_error = ""
            body: Any = None
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError as exc:
                    self.body_error = str(exc)
                    body = raw.decode("utf-8", "replace")
            if path.startswith(CONTROL_PREFIX):
                self._control(method, path, body)
                return
            fault = app.faults.take(path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            app.log.record(method, path, body, headers, fault.mode if fault else "ok")
            if fault is not None and self._apply_fault(fault, path):
                return
            app.route(self, method, path, body)
        except Abort:
            self._drop()
        except OSError:  # the client went away (timeouts, resets, broken pipes)
            self.close_connection = True

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # -- faults ----------------------------------------------------------------------------

    def _hold(self, fault: Fault, seconds: float | None) -> None:
        """Wait `seconds` (None: forever) or until the fault is reset/changed; Abort if the server stops."""
        waited = 0.0
        while seconds is None or waited < seconds:
            step = 0.05 if seconds is None else min(0.05, seconds - waited)
            released = fault.release.wait(step)
            if self.server.stopping.is_set():
                raise Abort
            if released:
                return
            waited += step

    def _apply_fault(self, fault: Fault, path: str) -> bool:
        """Apply `fault`; True when the request is fully handled (or dropped)."""
        if fault.mode == "down":
            raise Abort
        if fault.mode == "hang":
            # Held until reset; then dropped, as a wedged backend that finally dies would be.
            self._hold(fault, None)
            raise Abort
        if fault.mode == "slow":
            self._hold(fault, fault.seconds)
            return False
        if fault.mode == "error500":
            self.server.app.send_error(self, 500, fault.message, path)
            return True
        if fault.mode == "error429":
            self.extra_headers = {"Retry-After": str(fault.retry_after)}
            self.server.app.send_error(self, 429, fault.message, path)
            return True
        if fault.mode == "cut":
            self.cut = fault
        return False

    # -- responses -------------------------------------------------------------------------

    extra_headers: dict[str, str] = {}

    def _headers(self, status: int, content_type: str | None, headers: dict[str, str] | None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for key, value in {**self.extra_headers, **(headers or {})}.items():
            self.send_header(key, value)

    def send_bytes(
        self, status: int, data: bytes, content_type: str | None, headers: dict[str, str] | None = None
    ) -> None:
        self._headers(status, content_type, headers)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if self.cut is not None:
            # A non-streamed answer cut short: half the promised body, then the line drops.
            self.wfile.write(data[: len(data) // 2])
            raise Abort
        self.wfile.write(data)

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, dumps(obj), self.server.app.json_type, headers)

    def send_text(self, status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_bytes(status, text.encode(), content_type)

    def begin_stream(self, content_type: str, headers: dict[str, str] | None = None) -> None:
        self._headers(200, content_type, headers)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

    def send_event(self, data: bytes) -> None:
        """One stream event (an SSE `data:` block or an NDJSON line) as one HTTP chunk."""
        if self.cut is not None and self._events >= self.cut.after:
            raise Abort
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self._events += 1

    def end_stream(self, last: bytes = b"") -> None:
        """The terminal event (`[DONE]`) and the zero chunk; a `cut` fault drops the line instead."""
        if self.cut is not None:
            raise Abort
        if last:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(last), last))
        self.wfile.write(b"0\r\n\r\n")

    def pause(self, seconds: float) -> None:
        if seconds > 0 and self.server.stopping.wait(seconds):
            raise Abort

    # -- control API -----------------------------------------------------------------------

    def _control(self, method: str, path: str, body: Any) -> None:
        app = self.server.app
        body = body if isinstance(body, dict) else {}
        name = path[len(CONTROL_PREFIX) :].strip("/")
        if name == "requests" and method == "GET":
            self.send_json(200, app.log.items())
        elif name == "requests" and method == "DELETE":
            app.log.clear()
            self.send_json(200, {"status": "cleared"})
        elif name == "fault" and method == "GET":
            self.send_json(200, app.faults.describe())
        elif name == "fault" and method == "POST":
            params = dict(body)
            try:
                self.send_json(200, app.faults.set(str(params.pop("mode", "ok")), **params))
            except (TypeError, ValueError) as exc:
                self.send_json(400, {"error": str(exc)})
        elif name == "reset" and method == "POST":
            app.faults.reset()
            app.log.clear()
            self.send_json(200, {"status": "reset"})
        elif name == "config" and method == "POST":
            try:
                app.settings.update(body)
            except (TypeError, ValueError) as exc:
                self.send_json(400, {"error": str(exc)})
                return
            self.send_json(200, app.settings.as_dict())
        elif name == "info" and method == "GET":
            self.send_json(200, {**app.info(), "fault": app.faults.describe()})
        else:
            self.send_json(404, {"error": f"no control endpoint {method} {path}"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App, verbose: bool, tls: ssl.SSLContext | None = None) -> None:
        self.app = app
        self.verbose = verbose
        self.tls = tls
        self.stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            # A client that rejects the certificate fails the handshake here: an OSError, which
            # socketserver drops with the connection, as a real TLS engine would.
            sock.settimeout(5)
            sock = self.tls.wrap_socket(sock, server_side=True)
            sock.settimeout(None)
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def open_connections(self) -> int:
        with self._conns_lock:
            return len(self._conns)

    def drop_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.verbose and not self.stopping.is_set():
            super().handle_error(request, client_address)


class Runner:
    """Serves an App on a background thread; stop() makes the port refuse, start() reopens it."""

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 0, verbose: bool = False,
                 tls: ssl.SSLContext | None = None) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.verbose = verbose
        self.tls = tls
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def open_connections(self) -> int:
        """Client connections open now (kept-alive idle ones included); 0 when stopped."""
        server = self._server
        return 0 if server is None else server.open_connections()

    def start(self) -> None:
        if self._server is not None:
            return
        server = _Server((self.host, self.port), self.app, self.verbose, self.tls)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"standin-{self.app.name}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.stopping.set()
        self.app.faults.release_all()
        server.shutdown()
        server.server_close()
        server.drop_connections()
        if thread is not None:
            thread.join(timeout=5)


def serve_until_signal(app: App, host: str, port: int, verbose: bool = True) -> None:
    """The CLI's main loop: serve until SIGTERM/SIGINT (PID 1 in a container ignores an unhandled SIGTERM)."""
    runner = Runner(app, host, port, verbose)
    runner.start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    sys.stderr.write(f"{app.kind} stand-in {app.name!r} listening on {host}:{runner.port}\n")
    sys.stderr.flush()
    while not done.wait(1.0):
        pass
    runner.stop()
