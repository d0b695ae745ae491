"""The near-zero-cost backend: nginx answering fixed bodies, so the backend is not what is measured.

Paths (each model's base URL in the gateway and LiteLLM points at one prefix):
  /plain/v1/chat/completions  -> one chat.completion (JSON)
  /sse/v1/chat/completions    -> 20 content chunks + finish chunk + [DONE] (text/event-stream)
  /embed/v1/embeddings        -> one 384-dim embedding
  */api/version, */health     -> 200, so the gateway's readiness probe sees the backend up
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from bench import bodies

_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path {root}/body;
  client_body_buffer_size 1m;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /plain/v1/chat/completions {{ default_type application/json; return 200 '{chat}'; }}
    location = /sse/v1/chat/completions {{ default_type text/event-stream; return 200 '{sse}'; }}
    location = /embed/v1/embeddings {{ default_type application/json; return 200 '{embed}'; }}
    location ~ /api/version$ {{ default_type application/json; return 200 '{{"version":"0.12.0"}}'; }}
    location ~ /health$ {{ return 200 ''; }}
    location / {{ return 404; }}
  }}
}}
"""


class StaticBackend:
    def __init__(self, port: int, cpu: int | None = None) -> None:
        self.port = port
        self.cpu = cpu
        self.url = f"http://127.0.0.1:{port}"
        self._root = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StaticBackend:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        (self._root / "body").mkdir()
        conf = self._root / "nginx.conf"
        conf.write_text(_CONF.format(root=self._root, port=self.port, chat=bodies.chat_response(),
                                     sse=bodies.stream_response(), embed=bodies.embed_response()))
        cmd = [nginx, "-p", str(self._root), "-c", str(conf)]
        if self.cpu is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(self.cpu), *cmd]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/x/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"nginx exited: {err}")
        raise RuntimeError("nginx did not come up")

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._root, ignore_errors=True)
