"""Ollama stand-in: Ollama's native API (/api/*) and its OpenAI layer (/v1/*), wire-faithful, fake models.

python3 -m tests.standins.ollama --host 0.0.0.0 --port 11434 --models qwen3:4b,llava
python3 /opt/standin/ollama.py serve          # in the image; OLLAMA_HOST / OLLAMA_MODELS honoured
python3 /opt/standin/ollama.py pull qwen3:4b   # the `ollama` client subcommands, against OLLAMA_HOST
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any

if not __package__:
    # Run as a plain script (python3 /opt/standin/ollama.py): import its folder as a package so the
    # relative imports below work without the repository around it.
    _here = Path(__file__).resolve().parent
    sys.path.insert(0, str(_here.parent))
    __package__ = _here.name
    importlib.import_module(__package__)

from .common import Settings, dumps, parse_duration, report_env, rfc3339_local
from .httpbase import Handler, serve_until_signal
from .ollama_base import too_old_for
from .ollama_native import NDJSON, NativeGeneration
from .ollama_store import Model
from .ollama_v1 import OpenAILayer

DEFAULT_PORT = 11434
ENV_PREFIXES = ("OLLAMA_", "JETSON_", "NVIDIA_", "CUDA_")
PULL_MISSING = "pull model manifest: file does not exist"
# The registry refuses a model to an Ollama older than the model needs; the server passes its answer
# on ("pull model manifest: 412: ... requires a newer version of Ollama", seen with qwen3-vl).
PULL_TOO_OLD = ("pull model manifest: 412: \n\nThe model you are attempting to pull requires a newer version of Ollama."
                "\n\nPlease download the latest version at:\n\n\thttps://ollama.com/download\n\n")


class OllamaApp(NativeGeneration, OpenAILayer):
    """The whole Ollama stand-in: routing, model management, native generation, OpenAI layer."""

    # -- routing ---------------------------------------------------------------------------

    def route(self, h: Handler, method: str, path: str, body: Any) -> None:
        if method in ("GET", "HEAD") and path == "/":
            h.send_text(200, "Ollama is running")
            return
        if path.startswith("/v1/models/") and method == "GET":
            self._v1_model(h, path[len("/v1/models/") :])
            return
        handler = ROUTES.get((method, path)) or (ROUTES.get(("GET", path)) if method == "HEAD" else None)
        if handler is None:
            h.send_text(404, "404 page not found")
            return
        if (method == "POST" or method == "DELETE") and (h.body_error or not isinstance(body, dict)):
            message = "missing request body" if body is None else (h.body_error or "invalid request body")
            if path.startswith("/v1/"):
                self.send_error(h, 400, message, path)
            else:
                h.send_json(400, {"error": message})
            return
        handler(self, h, body or {}, path)

    # -- native API ------------------------------------------------------------------------

    def version(self, h: Handler, body: dict[str, Any], path: str) -> None:
        out: dict[str, Any] = {"version": self.engine_version}
        if self.env:
            out["standin"] = {"name": self.name, "env": self.env}
        h.send_json(200, out)

    def _tag(self, m: Model) -> dict[str, Any]:
        return {
            "name": m.name,
            "model": m.name,
            "modified_at": rfc3339_local(m.modified),
            "size": m.size,
            "digest": m.digest,
            "details": m.details(),
        }

    def tags(self, h: Handler, body: dict[str, Any], path: str) -> None:
        h.send_json(200, {"models": [self._tag(m) for m in self.store.models()]})

    def ps(self, h: Handler, body: dict[str, Any], path: str) -> None:
        models = []
        for m, expires in self.store.loaded():
            expiry = rfc3339_local(min(expires, 10_000_000_000.0))
            models.append({**self._tag(m), "expires_at": expiry, "size_vram": m.size, "context_length": 4096})
            models[-1].pop("modified_at")
        h.send_json(200, {"models": models})

    def pull(self, h: Handler, body: dict[str, Any], path: str) -> None:
        name = str(body.get("model") or body.get("name") or "")
        if not name:
            h.send_json(400, {"error": "model is required"})
            return
        stream = body.get("stream", True) is not False
        refusal = (PULL_TOO_OLD if too_old_for(name, self.engine_version)
                   else PULL_MISSING if self.store.is_unknown(name) else None)
        if not stream:
            if refusal:
                h.send_json(500, {"error": refusal})
                return
            h.pause(self.settings.pull_delay)
            self.store.add(name)
            h.send_json(200, {"status": "success"})
            return
        h.begin_stream(NDJSON)
        if refusal:
            h.send_event(dumps({"status": "pulling manifest"}) + b"\n")
            h.pause(self.settings.pull_delay)
            h.end_stream(dumps({"error": refusal}) + b"\n")
            return
        for i, event in enumerate(self.store.pull_progress(name)):
            if i:
                h.pause(self.settings.pull_delay)
            h.send_event(dumps(event) + b"\n")
        self.store.add(name)
        h.end_stream(dumps({"status": "success"}) + b"\n")

    def show(self, h: Handler, body: dict[str, Any], path: str) -> None:
        name = str(body.get("model") or body.get("name") or "")
        model = self.store.get(name)
        if model is None:
            h.send_json(404, {"error": f"model '{name}' not found"})
            return
        details = model.details()
        family = details["family"]
        h.send_json(
            200,
            {
                "license": "",
                "modelfile": (
                    f'# Modelfile generated by "ollama show"\nFROM {model.name}\nTEMPLATE {{{{ .Prompt }}}}\n'
                ),
                "parameters": 'stop "<|im_end|>"',
                "template": "{{ .Prompt }}",
                "details": details,
                "model_info": {
                    "general.architecture": family,
                    "general.parameter_count": int(model.parameters),
                    f"{family}.context_length": 32768,
                    f"{family}.embedding_length": self.settings.embedding_dim,
                },
                "capabilities": model.capabilities(),
                "modified_at": rfc3339_local(model.modified),
            },
        )

    def delete(self, h: Handler, body: dict[str, Any], path: str) -> None:
        name = str(body.get("model") or body.get("name") or "")
        if not self.store.delete(name):
            h.send_json(404, {"error": f"model '{name}' not found"})
            return
        h.send_bytes(200, b"", None)


ROUTES = {
    ("GET", "/api/version"): OllamaApp.version,
    ("GET", "/api/tags"): OllamaApp.tags,
    ("GET", "/api/ps"): OllamaApp.ps,
    ("POST", "/api/pull"): OllamaApp.pull,
    ("POST", "/api/show"): OllamaApp.show,
    ("DELETE", "/api/delete"): OllamaApp.delete,
    ("POST", "/api/chat"): OllamaApp.chat,
    ("POST", "/api/generate"): OllamaApp.generate,
    ("POST", "/api/embed"): OllamaApp.embed,
    ("POST", "/api/embeddings"): OllamaApp.embeddings_legacy,
    ("GET", "/v1/models"): OllamaApp.v1_models,
    ("POST", "/v1/chat/completions"): OllamaApp.v1_chat,
    ("POST", "/v1/completions"): OllamaApp.v1_completions,
    ("POST", "/v1/embeddings"): OllamaApp.v1_embeddings,
}


# ------------------------------------------------------------------------------- CLI


def parse_ollama_host(value: str | None) -> tuple[str, int]:
    """OLLAMA_HOST as Ollama reads it: `host`, `host:port`, `:port`, `http://host:port`, `[::]:port`."""
    text = (value or "").strip()
    text = text.split("://", 1)[-1].rstrip("/")
    if not text:
        return "127.0.0.1", DEFAULT_PORT
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest.lstrip(":") or DEFAULT_PORT)
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, DEFAULT_PORT
    return host or "0.0.0.0", int(port)  # Go listens on every interface for ":port"


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ollama", description="Ollama stand-in server")
    p.add_argument("command", nargs="?", default="serve", choices=["serve"], help="`serve`, as the real image runs")
    p.add_argument("--host", help="bind address (default: from OLLAMA_HOST, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: from OLLAMA_HOST, else 11434)")
    p.add_argument("--name", default=os.environ.get("STANDIN_NAME", "ollama"), help="server name shown in replies")
    p.add_argument(
        "--models",
        default=os.environ.get("STANDIN_MODELS", ""),
        help="comma-separated models present at start (not written to disk)",
    )
    p.add_argument("--models-dir", default=os.environ.get("OLLAMA_MODELS") or str(Path.home() / ".ollama" / "models"))
    p.add_argument(
        "--unknown",
        default=os.environ.get("STANDIN_UNKNOWN", "doesnotexist"),
        help="comma-separated substrings of names that fail to pull",
    )
    p.add_argument("--chunks", type=int, default=5, help="content chunks per streamed reply")
    p.add_argument("--chunk-delay", type=float, default=float(os.environ.get("STANDIN_CHUNK_DELAY", "0.05")))
    p.add_argument("--pull-delay", type=float, default=float(os.environ.get("STANDIN_PULL_DELAY", "0.02")))
    p.add_argument("--embedding-dim", type=int, default=768)
    p.add_argument("--quiet", action="store_true", help="no access log on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    while argv and os.path.basename(argv[0]) == "ollama":  # `ollama serve` given as the container command
        argv = argv[1:]
    if argv and (argv[0] in ("-v", "--version") or (argv[0] != "serve" and not argv[0].startswith("-"))):
        from . import ollama_cli

        return ollama_cli.main(argv)
    args = build_parser().parse_args(argv)
    env_host, env_port = parse_ollama_host(os.environ.get("OLLAMA_HOST"))
    settings = Settings(
        chunks=args.chunks,
        chunk_delay=args.chunk_delay,
        pull_delay=args.pull_delay,
        embedding_dim=args.embedding_dim,
    )
    app = OllamaApp(
        name=args.name,
        models=_csv(args.models),
        settings=settings,
        models_dir=Path(args.models_dir),
        unknown=_csv(args.unknown),
        keep_alive=parse_duration(os.environ.get("OLLAMA_KEEP_ALIVE"), 300.0),
        env=report_env(os.environ, ENV_PREFIXES),
    )
    serve_until_signal(app, args.host or env_host, args.port or env_port, verbose=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
