"""The Ollama stand-in's shared base: model store, error envelopes, model lookup."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .common import Settings, fake_embedding, parse_duration
from .httpbase import App, Handler
from .ollama_store import Model, ModelStore

NOT_FOUND = 'model "{}" not found, try pulling it first'
# What /api/version reports: the tag the stand-in image was built as (dustynv's builds say "0.0.0").
VERSION = os.environ.get("STANDIN_OLLAMA_VERSION", "0.13.1")
# Models an older Ollama cannot run. The model page: "Qwen3-VL models require Ollama 0.12.7"
# (ollama#12819, #12850).
NEEDS_NEWER = {"qwen3-vl": "0.12.7"}
# Where the official image keeps its models (OLLAMA_MODELS defaults to ~/.ollama/models, as root).
DEFAULT_MODELS_DIR = "/root/.ollama/models"


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("-")[0].split(".") if part.isdigit())


def too_old_for(name: str, version: str = VERSION) -> bool:
    family = name.split(":")[0].rsplit("/", 1)[-1]
    needed = NEEDS_NEWER.get(family)
    return needed is not None and _release(version) < _release(needed)


class OllamaBase(App):
    """State and helpers every part of the Ollama stand-in uses."""

    kind = "ollama"

    def __init__(
        self,
        name: str = "ollama",
        models: list[str] | None = None,
        settings: Settings | None = None,
        models_dir: Path | None = None,
        unknown: list[str] | None = None,
        keep_alive: float = 300.0,
        env: dict[str, str] | None = None,
        engine_version: str = VERSION,
    ) -> None:
        # Ollama serves ``&http.Server{Handler: nil}`` (server/routes.go): no IdleTimeout, no
        # ReadTimeout, so Go's net/http keeps an idle connection open until the client closes it or
        # the server stops (``srvr.Close()`` on SIGINT/SIGTERM closes them all, as Runner.stop does).
        super().__init__(name, settings or Settings(embedding_dim=768), env, keep_alive_seconds=None)
        self.store = ModelStore(
            models_dir, list(models or []), list(unknown if unknown is not None else ["doesnotexist"])
        )
        self.keep_alive = keep_alive
        self.engine_version = engine_version

    def info(self) -> dict[str, Any]:
        return {**super().info(), "models": [m.name for m in self.store.models()]}

    # -- errors ----------------------------------------------------------------------------

    def send_error(self, h: Handler, status: int, message: str, path: str) -> None:
        if path.startswith("/v1/"):
            # Ollama's OpenAI middleware re-wraps handler errors as api_error, keeping the status.
            kind = "invalid_request_error" if status == 400 else "api_error"
            h.send_json(status, {"error": {"message": message, "type": kind, "param": None, "code": None}})
        else:
            h.send_json(status, {"error": message})

    def _model_or_404(self, h: Handler, name: Any, path: str) -> Model | None:
        if not name:
            self.send_error(h, 400, "model is required", path)
            return None
        model = self.store.get(str(name))
        if model is None:
            self.send_error(h, 404, NOT_FOUND.format(name), path)
        return model

    def _runnable_or_error(self, h: Handler, name: Any, path: str) -> Model | None:
        """The model, or the answer real Ollama gives when it cannot load it. A model its version is
        too old for still lists in /api/tags and /v1/models (its files are there: pulled by a newer
        Ollama, or the image was rolled back), and every request that loads it fails: HTTP 500
        "unable to load model: <blob path>" (ollama#12626: `ollama run qwen3-vl` -> "Error: 500
        Internal Server Error: unable to load model: /var/lib/ollama/.ollama/models/blobs/sha256-...";
        ollama#12850 the same for qwen3-vl:32b before 0.12.7)."""
        model = self._model_or_404(h, name, path)
        if model is not None and too_old_for(model.name, self.engine_version):
            root = str(self.store.models_dir) if self.store.models_dir is not None else DEFAULT_MODELS_DIR
            weights = model.layers()[0]["digest"].replace(":", "-")
            self.send_error(h, 500, f"unable to load model: {root}/blobs/{weights}", path)
            return None
        return model

    def _keep_alive(self, body: dict[str, Any]) -> float:
        return parse_duration(body.get("keep_alive"), self.keep_alive)

    def _vectors(self, texts: list[str], dimensions: Any) -> list[list[float]]:
        dim = int(dimensions) if isinstance(dimensions, int) and dimensions > 0 else self.settings.embedding_dim
        return [fake_embedding(t, dim) for t in texts]
