"""The proxies under test, started as their own processes and pinned to one CPU.

``start_gateway`` runs ``vilms-gateway serve`` from the project venv; ``start_litellm`` runs the
pinned LiteLLM proxy from bench/.venv-litellm (no database, retries off, one worker). Both report
the time from exec to the first 200 on their readiness URL.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench import bodies

ROOT = Path(__file__).resolve().parent.parent
LITELLM_VENV = ROOT / "bench" / ".venv-litellm"
LITELLM_VERSION = "1.81.13"


@dataclass
class Target:
    name: str
    url: str
    proc: subprocess.Popen[bytes] | None = None
    ready_seconds: float = 0.0
    workdir: Path | None = None
    started_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _pinned(cmd: list[str], cpu: int | None) -> list[str]:
    if cpu is not None and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu), *cmd]
    return cmd


def _wait_ready(proc: subprocess.Popen[bytes], url: str, started: float, limit: float) -> float:
    deadline = started + limit
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{url}: process exited with {proc.returncode}")
            try:
                if client.get(url).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.005)
    raise RuntimeError(f"{url} not ready within {limit} s")


def gateway_config(backend_url: str, *, local_embeddings: bool = False, threads: int | None = None,
                   access_log: bool = True) -> dict[str, Any]:
    def model(name: str, prefix: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "engine": "ollama", "base-url": f"{backend_url}/{prefix}", **extra}

    doc: dict[str, Any] = {
        "host": {"platform": "cpu"},
        "serving": {
            "alternate-hosts": False,
            "models": [model(bodies.CHAT_MODEL, "plain"), model(bodies.STREAM_MODEL, "sse"),
                       model(bodies.EMBED_MODEL, "embed", type="embedding")],
        },
        # threads None: the gateway's own capacity defaults, as shipped
        "gateway": {"access-log": access_log, "probe-interval": 5, **({"threads": threads} if threads else {})},
        "embedding": {"enabled": False},
    }
    if local_embeddings:
        doc["embedding"] = {"enabled": True, "model": "sentence-transformers/all-MiniLM-L6-v2",
                            "device": "cpu", "batch-size": 64, "idle-unload-seconds": 0}
    return doc


def start_gateway(backend_url: str, port: int, cpu: int | None, *, name: str = "gateway",
                  env: dict[str, str] | None = None, source: Path | None = None, **config: Any) -> Target:
    """The shipped gateway (``vilms-gateway serve`` from the project venv) on ``port``, ready; with
    ``source``, the ``gateway`` package of that tree instead, run by the same venv."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-gw-"))
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(gateway_config(backend_url, **config)))
    args = ["serve", "--config", str(path), "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"]
    exe = ROOT / ".venv" / "bin" / "vilms-gateway"
    cmd = [str(exe), *args] if exe.exists() and source is None else [sys.executable, "-m", "gateway", *args]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "PYTHONPATH": str(source or ROOT), **(env or {})}
    started = time.monotonic()
    proc = subprocess.Popen(_pinned(cmd, cpu), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=full_env, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    ready = _wait_ready(proc, url + "/health/ready", started, 30)
    return Target(name, url, proc, ready, workdir, started)


def litellm_available() -> bool:
    return (LITELLM_VENV / "bin" / "litellm").exists()


def litellm_config(backend_url: str) -> dict[str, Any]:
    def entry(name: str, prefix: str) -> dict[str, Any]:
        return {"model_name": name, "litellm_params": {
            "model": f"openai/{name}", "api_base": f"{backend_url}/{prefix}/v1", "api_key": "sk-bench",
            "max_retries": 0}}

    return {
        "model_list": [entry(bodies.CHAT_MODEL, "plain"), entry(bodies.STREAM_MODEL, "sse"),
                       entry(bodies.EMBED_MODEL, "embed")],
        "litellm_settings": {"num_retries": 0, "request_timeout": 60, "telemetry": False,
                             "drop_params": True, "set_verbose": False},
        "router_settings": {"num_retries": 0, "retry_after": 0},
        "general_settings": {},
    }


def start_litellm(backend_url: str, port: int, cpu: int | None) -> Target:
    workdir = Path(tempfile.mkdtemp(prefix="bench-litellm-"))
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(litellm_config(backend_url)))
    cmd = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(path), "--host", "127.0.0.1",
           "--port", str(port), "--num_workers", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "LITELLM_", "OPENAI_"))}
    # No network here: use the bundled cost map, send no telemetry, log little.
    env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
                "DISABLE_SCHEMA_UPDATE": "True", "NO_DOCS": "True"})
    started = time.monotonic()
    proc = subprocess.Popen(_pinned(cmd, cpu), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    ready = _wait_ready(proc, url + "/health/readiness", started, 90)
    return Target("litellm", url, proc, ready, workdir, started)
