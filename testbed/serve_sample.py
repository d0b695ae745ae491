"""`make serve` without CONFIG: the sample config (examples/serve-sample.yaml) served in the
foreground, with the stand-in Ollama it names started on a free loopback port and stopped with it.

    python testbed/serve_sample.py [--port 8990]

The port defaults to 8990 (VILMS_SERVE_PORT), next to the demo box's 8989. The API key is
.demo/api-key (made here when absent), the file the README's examples read.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "serve-sample.yaml"
# VILMS_KEY_FILE moves it (the README test keeps its own).
KEY_FILE = Path(os.environ.get("VILMS_KEY_FILE", REPO / ".demo" / "api-key"))
MODELS = "qwen3:4b-instruct,qwen3-vl:4b-instruct"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_key(path: Path) -> None:
    if path.exists() and path.read_text().strip():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("vilms-demo-" + secrets.token_urlsafe(24) + "\n")


def wait_for_port(port: int, proc: subprocess.Popen[bytes], limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve: the stand-in Ollama exited ({proc.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"serve: the stand-in Ollama did not listen on {port} within {limit:g} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("VILMS_SERVE_PORT", "8990")))
    args = parser.parse_args(argv)
    ensure_key(KEY_FILE)
    with tempfile.TemporaryDirectory(prefix="vilms-serve-") as tmp:
        ollama_port = free_port()
        ollama = subprocess.Popen(
            [sys.executable, "-m", "tests.standins.ollama", "serve", "--host", "127.0.0.1",
             "--port", str(ollama_port), "--models", MODELS, "--models-dir", f"{tmp}/models", "--quiet"],
            cwd=REPO,
        )
        try:
            wait_for_port(ollama_port, ollama)
            config = Path(tmp) / "config.yaml"
            config.write_text(SAMPLE.read_text().replace("OLLAMA_URL", f"http://127.0.0.1:{ollama_port}")
                              .replace("KEY_FILE", str(KEY_FILE)))
            print(f"serve: stand-in Ollama on 127.0.0.1:{ollama_port}; gateway on http://127.0.0.1:{args.port}\n"
                  f"       export GW=http://127.0.0.1:{args.port} VILMS_KEY=$(cat .demo/api-key)", flush=True)
            gateway = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config),
                                        "--host", "127.0.0.1", "--port", str(args.port)], cwd=REPO)
            # Ctrl-C / SIGTERM reach the gateway, which drains and exits; the stand-in follows.
            signal.signal(signal.SIGTERM, lambda *_: gateway.send_signal(signal.SIGTERM))
            try:
                return gateway.wait()
            except KeyboardInterrupt:
                return gateway.wait()
        finally:
            ollama.terminate()
            ollama.wait()


if __name__ == "__main__":
    sys.exit(main())
