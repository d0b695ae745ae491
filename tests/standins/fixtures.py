"""`StandinServer`: an in-process Ollama or vLLM stand-in on 127.0.0.1, for pytest.

    with StandinServer.ollama(models=["qwen3:4b"], name="ollama-a") as a:
        httpx.get(a.url + "/api/tags")
        a.set_fault("error500", count=1)
        a.stop()   # port now refuses connections: a dead host
        a.start()  # same port again: the host came back

State (models, faults, request log, settings) lives in the app, so it survives stop()/start().
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .common import Settings
from .httpbase import App, Runner
from .ollama import OllamaApp
from .ollama_base import VERSION as OLLAMA_VERSION
from .vllm import KEEP_ALIVE_SECONDS, VllmApp


class StandinServer:
    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 0, start: bool = True,
                 tls: ssl.SSLContext | None = None) -> None:
        self.app = app
        self._runner = Runner(app, host, port, tls=tls)
        if start:
            self.start()

    # -- constructors ----------------------------------------------------------------------

    @classmethod
    def ollama(
        cls,
        models: Iterable[str] = ("qwen3:4b",),
        name: str = "ollama",
        *,
        chunks: int = 5,
        chunk_delay: float = 0.0,
        pull_delay: float = 0.0,
        embedding_dim: int = 768,
        models_dir: str | Path | None = None,
        unknown: Iterable[str] = ("doesnotexist",),
        keep_alive: float = 300.0,
        env: dict[str, str] | None = None,
        port: int = 0,
        start: bool = True,
        tls: ssl.SSLContext | None = None,
        engine_version: str = OLLAMA_VERSION,
    ) -> StandinServer:
        """An Ollama stand-in with `models` already present; `models_dir` persists pulls to disk;
        `tls` (a server-side context) serves it over HTTPS; `engine_version` is the Ollama release it
        plays (default STANDIN_OLLAMA_VERSION or 0.13.1): a model that release cannot run is listed
        but fails to load, as on the real one."""
        app = OllamaApp(
            name=name,
            models=list(models),
            settings=Settings(
                chunks=chunks, chunk_delay=chunk_delay, pull_delay=pull_delay, embedding_dim=embedding_dim
            ),
            models_dir=Path(models_dir) if models_dir is not None else None,
            unknown=list(unknown),
            keep_alive=keep_alive,
            env=env,
            engine_version=engine_version,
        )
        return cls(app, port=port, start=start, tls=tls)

    @classmethod
    def vllm(
        cls,
        model: str = "Qwen/Qwen3-4B",
        name: str = "vllm",
        *,
        served_model_names: Iterable[str] | None = None,
        max_model_len: int = 4096,
        api_key: str | None = None,
        chunks: int = 5,
        chunk_delay: float = 0.0,
        embedding_dim: int = 1024,
        env: dict[str, str] | None = None,
        port: int = 0,
        start: bool = True,
        keep_alive_seconds: float = KEEP_ALIVE_SECONDS,
        keys: dict[str, str] | None = None,
        prefix: str = "",
    ) -> StandinServer:
        """A vLLM stand-in serving one `model` (answering to `served_model_names` if given); it closes
        a connection idle `keep_alive_seconds` after an answer, as vLLM's uvicorn does after 5 s."""
        app = VllmApp(
            model=model,
            served_model_names=list(served_model_names) if served_model_names is not None else None,
            name=name,
            settings=Settings(chunks=chunks, chunk_delay=chunk_delay, embedding_dim=embedding_dim),
            max_model_len=max_model_len,
            api_key=api_key,
            env=env,
            keep_alive_seconds=keep_alive_seconds,
            keys=keys,
            prefix=prefix,
        )
        return cls(app, port=port, start=start)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> StandinServer:
        """Listen again (on the same port once one was assigned); a no-op when running."""
        self._runner.start()
        return self

    def stop(self) -> None:
        """Close the listening socket and every open connection: clients now get 'connection refused'."""
        self._runner.stop()

    def close(self) -> None:
        self.stop()

    @property
    def open_connections(self) -> int:
        """Client connections open now, idle kept-alive ones included."""
        return self._runner.open_connections

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._runner.running

    # -- addressing ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.app.name

    @property
    def host(self) -> str:
        return self._runner.host

    @property
    def port(self) -> int:
        return self._runner.port

    @property
    def url(self) -> str:
        return f"{'https' if self._runner.tls else 'http'}://{self.host}:{self.port}"

    # -- test hooks ------------------------------------------------------------------------

    def set_fault(self, mode: str, **params: Any) -> dict[str, Any]:
        """Same as POST /_standin/fault: mode plus seconds / retry_after / after / message / count / paths."""
        return self.app.faults.set(mode, **params)

    def clear_fault(self) -> None:
        self.app.faults.reset()

    def reset(self) -> None:
        """Same as POST /_standin/reset: no fault, empty request log."""
        self.app.faults.reset()
        self.app.log.clear()

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Same as POST /_standin/config: chunks, chunk_delay, pull_delay, embedding_dim."""
        self.app.settings.update(settings)
        return self.app.settings.as_dict()

    @property
    def requests(self) -> list[tuple[str, Any]]:
        """(path, parsed JSON body or None) of every request received, oldest first."""
        return [(r["path"], r["body"]) for r in self.app.log.items()]

    @property
    def request_log(self) -> list[dict[str, Any]]:
        """Full records: method, path, body, headers (lower-case keys), fault applied, time."""
        return self.app.log.items()

    def bodies(self, path: str) -> list[Any]:
        """Bodies of the requests received on exactly `path`."""
        return [body for p, body in self.requests if p == path]

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<StandinServer {self.app.kind} {self.name!r} {self.url} {state}>"
