"""The Ollama stand-in's shared base: model store, error envelopes, model lookup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import Settings, fake_embedding, parse_duration
from .httpbase import App, Handler
from .ollama_store import Model, ModelStore

NOT_FOUND = 'model "{}" not found, try pulling it first'


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
    ) -> None:
        # Ollama serves ``&http.Server{Handler: nil}`` (server/routes.go): no IdleTimeout, no
        # ReadTimeout, so Go's net/http keeps an idle connection open until the client closes it or
        # the server stops (``srvr.Close()`` on SIGINT/SIGTERM closes them all, as Runner.stop does).
        super().__init__(name, settings or Settings(embedding_dim=768), env, keep_alive_seconds=None)
        self.store = ModelStore(
            models_dir, list(models or []), list(unknown if unknown is not None else ["doesnotexist"])
        )
        self.keep_alive = keep_alive

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

    def _keep_alive(self, body: dict[str, Any]) -> float:
        return parse_duration(body.get("keep_alive"), self.keep_alive)

    def _vectors(self, texts: list[str], dimensions: Any) -> list[list[float]]:
        dim = int(dimensions) if isinstance(dimensions, int) and dimensions > 0 else self.settings.embedding_dim
        return [fake_embedding(t, dim) for t in texts]
