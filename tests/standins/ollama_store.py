"""The Ollama stand-in's model store: names, fake metadata, pull progress, manifests on disk.

Pulled models are written as small manifest files in Ollama's own layout
(`$OLLAMA_MODELS/manifests/registry.ollama.ai/library/<model>/<tag>`), so a container restart
with the models volume kept still lists them, as the real server does. No blobs are written.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"


def normalize(name: str) -> str:
    """Ollama's short name: `llama3` -> `llama3:latest`, `registry.ollama.ai/library/x:t` -> `x:t`."""
    name = name.strip()
    base, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        base, tag = name, "latest"
    for prefix in (
        f"{DEFAULT_REGISTRY}/{DEFAULT_NAMESPACE}/",
        f"{DEFAULT_REGISTRY}/",
        f"{DEFAULT_NAMESPACE}/",
    ):
        if base.startswith(prefix):
            base = base[len(prefix) :]
            break
    return f"{base}:{tag}"


def _manifest_parts(name: str) -> list[str]:
    base, _, tag = normalize(name).rpartition(":")
    parts = base.split("/")
    if len(parts) == 1:
        parts = [DEFAULT_REGISTRY, DEFAULT_NAMESPACE, parts[0]]
    elif len(parts) == 2:
        parts = [DEFAULT_REGISTRY, *parts]
    return [*parts, tag]


def namespace(name: str) -> str:
    """What Ollama's /v1/models reports as `owned_by`."""
    return _manifest_parts(name)[-3]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Model:
    name: str
    modified: float

    @property
    def digest(self) -> str:
        return _sha(f"manifest:{self.name}")

    @property
    def is_embedding(self) -> bool:
        return any(k in self.name for k in ("embed", "minilm", "bge-"))

    @property
    def parameters(self) -> float:
        match = re.search(r"(\d+(?:\.\d+)?)([bBmM])(?![a-zA-Z])", self.name.replace(":", " ").replace("-", " "))
        if not match:
            return 7.0e9
        return float(match.group(1)) * (1e9 if match.group(2) in "bB" else 1e6)

    @property
    def quantization(self) -> str:
        match = re.search(r"(q\d_k_[sml]|q\d_\d|q\d_k|fp16|bf16|f16)", self.name.lower())
        if match:
            return match.group(1).upper()
        return "F16" if self.is_embedding else "Q4_K_M"

    def layers(self) -> list[dict[str, Any]]:
        """Model weights (about 0.6 bytes a parameter), template and params blobs."""
        weight = int(self.parameters * (2.0 if self.quantization in ("F16", "FP16", "BF16") else 0.6))
        return [
            {
                "mediaType": "application/vnd.ollama.image.model",
                "digest": "sha256:" + _sha(f"model:{self.name}"),
                "size": weight,
            },
            {
                "mediaType": "application/vnd.ollama.image.template",
                "digest": "sha256:" + _sha(f"tmpl:{self.name}"),
                "size": 1429,
            },
            {
                "mediaType": "application/vnd.ollama.image.params",
                "digest": "sha256:" + _sha(f"params:{self.name}"),
                "size": 96,
            },
        ]

    @property
    def size(self) -> int:
        return sum(layer["size"] for layer in self.layers())

    def details(self) -> dict[str, Any]:
        model = self.name.rpartition(":")[0].split("/")[-1]
        family = re.sub(r"[^a-z0-9]", "", model.lower()) or "llama"
        params = self.parameters
        size = f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"
        return {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": size,
            "quantization_level": self.quantization,
        }

    def capabilities(self) -> list[str]:
        if self.is_embedding:
            return ["embedding"]
        caps = ["completion"]
        if re.search(r"vl|llava|vision|gemma3|moondream", self.name):
            caps.append("vision")
        return caps

    def manifest(self) -> dict[str, Any]:
        return {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": "sha256:" + _sha(f"config:{self.name}"),
                "size": 487,
            },
            "layers": self.layers(),
        }


class ModelStore:
    """Present models: preloaded ones (memory) plus pulled ones (persisted when a directory is set)."""

    def __init__(self, models_dir: Path | None, preload: list[str], unknown: list[str]) -> None:
        self.models_dir = models_dir
        self.unknown = [u for u in unknown if u]
        self._lock = threading.Lock()
        self._models: dict[str, Model] = {}
        self._loaded: dict[str, float] = {}  # name -> expiry (monotonic-free wall clock)
        now = time.time()
        for name in preload:
            if name.strip():
                self._models[normalize(name)] = Model(normalize(name), now)
        self._load_dir()

    def _manifest_path(self, name: str) -> Path:
        assert self.models_dir is not None
        return self.models_dir.joinpath("manifests", *_manifest_parts(name))

    def _load_dir(self) -> None:
        root = self.models_dir / "manifests" if self.models_dir else None
        if root is None or not root.is_dir():
            return
        for path in root.glob("*/*/*/*"):
            if not path.is_file():
                continue
            host, ns, model, tag = path.relative_to(root).parts
            if host == DEFAULT_REGISTRY:
                base = model if ns == DEFAULT_NAMESPACE else f"{ns}/{model}"
            else:
                base = f"{host}/{ns}/{model}"
            name = f"{base}:{tag}"
            self._models[name] = Model(name, path.stat().st_mtime)

    def is_unknown(self, name: str) -> bool:
        return any(u in name for u in self.unknown)

    def get(self, name: str) -> Model | None:
        with self._lock:
            return self._models.get(normalize(name)) if name else None

    def models(self) -> list[Model]:
        with self._lock:
            return sorted(self._models.values(), key=lambda m: m.modified, reverse=True)

    def add(self, name: str) -> Model:
        model = Model(normalize(name), time.time())
        if self.models_dir is not None:
            path = self._manifest_path(model.name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(model.manifest()))
        with self._lock:
            self._models[model.name] = model
        return model

    def delete(self, name: str) -> bool:
        with self._lock:
            model = self._models.pop(normalize(name), None)
            self._loaded.pop(normalize(name), None)
        if model is not None and self.models_dir is not None:
            path = self._manifest_path(model.name)
            if path.is_file():
                path.unlink()
        return model is not None

    def touch(self, name: str, keep_alive: float) -> None:
        """Mark a model loaded (for /api/ps) until `keep_alive` seconds from now; 0 unloads it."""
        with self._lock:
            if keep_alive <= 0:
                self._loaded.pop(normalize(name), None)
            else:
                self._loaded[normalize(name)] = time.time() + keep_alive

    def loaded(self) -> list[tuple[Model, float]]:
        now = time.time()
        with self._lock:
            return [(self._models[n], exp) for n, exp in self._loaded.items() if exp > now and n in self._models]

    def pull_progress(self, name: str) -> list[dict[str, Any]]:
        """The NDJSON lines `ollama pull` prints, minus the final "success"."""
        model = Model(normalize(name), time.time())
        events: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        for layer in model.layers():
            digest, total = layer["digest"], layer["size"]
            status = f"pulling {digest[7:19]}"
            steps = 4 if total > 1_000_000 else 1
            events.append({"status": status, "digest": digest, "total": total})
            events += [
                {"status": status, "digest": digest, "total": total, "completed": total * i // steps}
                for i in range(1, steps + 1)
            ]
        events += [{"status": "verifying sha256 digest"}, {"status": "writing manifest"}]
        return events
