"""A loopback web server with a few images (and non-images) for the image-inlining tests."""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# A real 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
ROUTES: dict[str, tuple[str, bytes]] = {
    "/cat.png": ("image/png", PNG),
    "/untyped": ("application/octet-stream", PNG),
    "/page.html": ("text/html", b"<html>not an image</html>"),
    "/big.png": ("image/png", PNG + b"\0" * 64 * 1024),
}


# The gateway never fetches from the box's own loopback unless told to: a test serving images from
# this loopback server opts in, as an operator would, with this gateway section.
LOOPBACK_IMAGES: dict[str, Any] = {"image-fetch-networks": ["127.0.0.0/8"]}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.partition("=")[2])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        route = ROUTES.get(self.path)
        if route is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        content_type, body = route
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    def __init__(self, host: str) -> None:
        super().__init__((host, 0), _Handler)
        self.hits: list[str] = []


class ImageServer:
    """``/redirect?to=URL`` answers 302 to URL; ``hits`` lists every path asked for."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._server = _Server(host)
        self.hits = self._server.hits
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def vision_message(urls: list[str], text: str = "what changed?") -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return [{"role": "user", "content": parts}]
