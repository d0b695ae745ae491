"""Parse the gateway's YAML config (the old ViLMS ``config.yaml`` plus new keys) into frozen dataclasses.

Parsing happens once at start-up; nothing here runs at import time. Every problem found is collected
and reported together, each with its key path, so an operator can fix a file in one go.
"""

from __future__ import annotations

import ipaddress
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from gateway.schema import validate_document

ENGINES = ("ollama", "vllm", "openai")
# A key that a service refuses (401/403) stays out of use this long unless the model says otherwise.
DEFAULT_KEY_COOLDOWN = 3600.0
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_PORT = 8989
# Sized for LLM work: every open stream holds a request slot and a thread for seconds to minutes.
DEFAULT_MAX_INFLIGHT = 1024
DEFAULT_QUEUE_SIZE = 256
SPARE_THREADS = 16  # beyond slots and queue: /health, /v1/models, /metrics and quick refusals
_PLATFORM_NAMES = {"dgpu": "dgpu", "js": "jetson", "jetson": "jetson", "cpu": "cpu"}

# Upper-case keys some old configs used; each maps onto its place in the current format.
_LEGACY_KEYS: dict[str, tuple[str, ...]] = {
    "ENGINE": ("serving", "engine"),
    "MODELS": ("serving", "models"),
    "BASE_URL": ("serving", "base-url"),
    "OLLAMA_BASE_URL": ("serving", "ollama-base-url"),
    "VLLM_BASE_URL": ("serving", "vllm-base-url"),
    "DEFAULT_MAX_FRAMES": ("serving", "default-max-frames"),
    "MODEL_ALIASES": ("model-aliases",),
    "HOST_PLATFORM": ("host", "platform"),
    "EMBEDDING_ENABLED": ("embedding", "enabled"),
    "EMBEDDING_MODEL": ("embedding", "model"),
}
# Old URLs often name the full OpenAI path; the gateway appends the path each call needs.
_URL_SUFFIXES = ("/v1/chat/completions", "/chat/completions", "/v1/embeddings", "/embeddings", "/v1")


class ConfigError(Exception):
    def __init__(self, problems: list[str], source: str = "<config>") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(problems))


@dataclass(frozen=True)
class ModelEntry:
    name: str
    type: str = "llm"
    engine: str | None = None
    aliases: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    max_frames: int | None = None
    base_urls: tuple[str, ...] = ()
    port: int | None = None
    fallback: tuple[str, ...] = ()
    # engine: openai only (gateway/keys.py, gateway/budget.py)
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    api_key_file: str | None = None
    api_key_env: str | None = None
    key_cooldown: float = DEFAULT_KEY_COOLDOWN
    max_requests_per_day: int | None = None
    upstream_model: str | None = None  # the name the service knows the model by (default: name)

    @property
    def remote(self) -> bool:
        """An OpenAI-compatible service beyond the box: a peer box's gateway or a cloud API."""
        return self.engine == "openai"

    @property
    def wire_name(self) -> str:
        return self.upstream_model or self.name


@dataclass(frozen=True)
class EmbeddingSettings:
    enabled: bool = False
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    base_url: str | None = None
    api_key: str | None = None
    device: str = "auto"
    batch_size: int = 32
    idle_unload_seconds: float = 600.0
    aliases: tuple[str, ...] = ()
    catch_all: bool = False  # answer any model name on /v1/embeddings, as the old gateway did


@dataclass(frozen=True)
class ServiceSettings:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    # The capacity model (docs/configuration.md): None = sized from the others; see the properties.
    threads: int | None = None
    connection_limit: int = 4096
    max_inflight: int | None = None
    queue_size: int | None = None
    queue_timeout: float = 30.0
    idle_timeout: float = 60.0
    header_timeout: float = 10.0
    max_body_bytes: int = 20 * 1024 * 1024
    api_keys: tuple[str, ...] = ()
    api_key_file: str | None = None
    connect_timeout: float = 3.0
    read_timeout: float = 120.0
    # Idle engine connections older than this are not reused: under the engines' keep-alive
    # (uvicorn's, so vLLM's, is 5 s; gateway/httpclient.py has the sources).
    engine_idle_seconds: float = 4.0
    request_deadline: float = 300.0
    retries: int = 1
    backoff_base: float = 0.1
    backoff_max: float = 1.0
    cooldown_failures: int = 3
    cooldown_seconds: float = 30.0
    probe_interval: float = 10.0
    image_max_bytes: int = 10 * 1024 * 1024
    image_fetch_timeout: float = 10.0
    # Empty: images are fetched from any address. Otherwise only from inside these networks.
    image_fetch_networks: tuple[Network, ...] = ()
    access_log: bool = True
    drain_seconds: float = 30.0

    @property
    def queue_limit(self) -> int:
        """Requests that may wait for a request slot (each waits on a thread of its own)."""
        if self.queue_size is not None:
            return self.queue_size
        if self.threads is None:
            return DEFAULT_QUEUE_SIZE
        if self.max_inflight is not None:
            return max(0, self.threads - 1 - self.max_inflight)
        return (self.threads - 1) // 4  # a quarter of what the kept thread leaves

    @property
    def inflight_limit(self) -> int:
        """Requests doing upstream work at once, streams included."""
        if self.max_inflight is not None:
            return self.max_inflight
        if self.threads is None:
            return DEFAULT_MAX_INFLIGHT
        # One worker thread is kept out of upstream work and the queue, so /health always answers.
        return max(1, self.threads - 1 - self.queue_limit)

    @property
    def request_threads(self) -> int:
        """waitress's request threads: every request slot and queue place, plus threads for the rest."""
        if self.threads is not None:
            return self.threads
        return self.inflight_limit + self.queue_limit + SPARE_THREADS


@dataclass(frozen=True)
class Config:
    platform: str = "dgpu"
    forced_engine: str | None = None
    ollama_urls: tuple[str, ...] = ("http://localhost:11434",)
    vllm_urls: tuple[str, ...] = ("http://localhost:8000",)
    alternate_hosts: bool = True
    default_max_frames: int = 8
    models: tuple[ModelEntry, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    embedding: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    warnings: tuple[str, ...] = ()
    source: str = "<memory>"


def load_config(path: str | Path) -> Config:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read file: {exc.strerror or exc}"], source) from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], source) from exc
    return parse_config(document if document is not None else {}, source=source)


def parse_config(document: Any, *, source: str = "<memory>") -> Config:
    if not isinstance(document, dict):
        raise ConfigError(["(top level): must be a mapping"], source)
    document = _apply_legacy_keys(document)
    problems, warnings = validate_document(document)
    if problems:
        raise ConfigError(problems, source)

    serving = document.get("serving") or {}
    base = serving.get("base-url")
    models = tuple(_model(raw) for raw in serving.get("models") or [])
    config = Config(
        platform=_PLATFORM_NAMES[(document.get("host") or {}).get("platform", "dgpu")],
        forced_engine=serving.get("engine"),
        ollama_urls=_urls(serving.get("ollama-base-url") or base or "http://localhost:11434",
                          serving.get("ollama-hosts")),
        vllm_urls=_urls(serving.get("vllm-base-url") or base or "http://localhost:8000",
                        serving.get("vllm-hosts")),
        alternate_hosts=serving.get("alternate-hosts", True),
        default_max_frames=serving.get("default-max-frames", 8),
        models=models,
        aliases=MappingProxyType(dict(document.get("model-aliases") or {})),
        embedding=_embedding(document.get("embedding") or {}),
        service=_service(document.get("gateway") or {}),
        warnings=tuple(warnings),
        source=source,
    )
    problems = _semantic_problems(config)
    if problems:
        raise ConfigError(problems, source)
    return config


def normalize_base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    for suffix in _URL_SUFFIXES:
        if url.endswith(suffix):
            return url[: -len(suffix)].rstrip("/")
    return url


def remote_base_url(url: str) -> str:
    """An engine: openai ``base-url`` names the service's API root (``.../v1``, or for some services
    another path) and is kept as given: requests go to ``<base-url>/chat/completions``. Only a full
    endpoint path someone pasted is cut off."""
    url = url.strip().rstrip("/")
    for suffix in ("/chat/completions", "/embeddings"):
        if url.endswith(suffix):
            return url[: -len(suffix)].rstrip("/")
    return url


def expand_url(template: str, model: ModelEntry) -> str:
    """Fill a vLLM URL template: ``{}``/``{model}``/``{name}`` is the model name, ``{slug}`` a
    DNS-safe form of it, ``{port}`` the model's port."""
    if "{" not in template:
        return normalize_base_url(template)
    fields = {"model": model.name, "name": model.name, "slug": slugify(model.name), "port": model.port or ""}
    return normalize_base_url(template.format(model.name, **fields))


def slugify(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def _apply_legacy_keys(document: dict[str, Any]) -> dict[str, Any]:
    doc = {k: (dict(v) if isinstance(v, dict) else v) for k, v in document.items()}
    serving = doc.get("serving")
    for section in (doc, serving if isinstance(serving, dict) else None):
        if section is None:
            continue
        for legacy, target in _LEGACY_KEYS.items():
            if legacy not in section:
                continue
            value = section.pop(legacy)
            parent = doc
            for key in target[:-1]:
                if not isinstance(parent.get(key), dict):
                    parent[key] = {}
                parent = parent[key]
            parent.setdefault(target[-1], value)
    return doc


def _params(raw: Any) -> dict[str, Any]:
    if isinstance(raw, list):
        merged: dict[str, Any] = {}
        for item in raw:
            merged.update(item)
        raw = merged
    # YAML keys use dashes (max-tokens); the OpenAI wire format uses underscores (max_tokens).
    return {str(k).replace("-", "_"): v for k, v in (raw or {}).items()}


def _model(raw: dict[str, Any]) -> ModelEntry:
    params = _params(raw.get("params"))
    max_frames = params.pop("max_frames", None)
    urls = ([raw["base-url"]] if raw.get("base-url") else []) + list(raw.get("hosts") or [])
    return ModelEntry(
        name=raw["name"],
        type=str(raw.get("type") or "llm").lower(),
        engine=raw.get("engine"),
        aliases=tuple(raw.get("aliases") or ()),
        params=MappingProxyType(params),
        max_frames=int(max_frames) if max_frames is not None else None,
        base_urls=tuple(dict.fromkeys(urls)),
        port=raw.get("port"),
        fallback=tuple(raw.get("fallback") or ()),
        api_keys=tuple(raw.get("api-keys") or ()),
        api_key_file=raw.get("api-key-file"),
        api_key_env=raw.get("api-key-env"),
        key_cooldown=float(raw.get("key-cooldown", DEFAULT_KEY_COOLDOWN)),
        max_requests_per_day=raw.get("max-requests-per-day"),
        upstream_model=raw.get("upstream-model"),
    )


def _urls(primary: str, extra: list[str] | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys([primary, *(extra or [])]))


def _embedding(raw: dict[str, Any]) -> EmbeddingSettings:
    defaults = EmbeddingSettings()
    return EmbeddingSettings(
        enabled=bool(raw.get("enabled", False)),
        model=raw.get("model") or defaults.model,
        base_url=raw.get("base-url"),
        api_key=raw.get("api-key"),
        device=raw.get("device", defaults.device),
        batch_size=raw.get("batch-size", defaults.batch_size),
        idle_unload_seconds=float(raw.get("idle-unload-seconds", defaults.idle_unload_seconds)),
        aliases=tuple(raw.get("aliases") or ()),
        catch_all=bool(raw.get("catch-all", False)),
    )


def _service(raw: dict[str, Any]) -> ServiceSettings:
    values = {key.replace("-", "_"): value for key, value in raw.items()}
    if "api_keys" in values:
        values["api_keys"] = tuple(values["api_keys"])
    if "image_fetch_networks" in values:
        values["image_fetch_networks"] = tuple(
            ipaddress.ip_network(net, strict=False) for net in values["image_fetch_networks"] or ())
    return ServiceSettings(**values)


def _remote_model_problems(config: Config) -> list[str]:
    problems: list[str] = []
    for i, model in enumerate(config.models):
        where = f"serving.models[{i}]"
        if not model.remote:
            for key, value in (("api-keys", model.api_keys), ("api-key-file", model.api_key_file),
                               ("api-key-env", model.api_key_env),
                               ("max-requests-per-day", model.max_requests_per_day)):
                if value:
                    problems.append(f"{where}.{key}: only for engine: openai")
            continue
        if len(model.base_urls) != 1:
            problems.append(f"{where}.base-url: engine: openai needs exactly one base-url (the service's /v1),"
                            " and no hosts")
        if sum(bool(k) for k in (model.api_keys, model.api_key_file, model.api_key_env)) > 1:
            problems.append(f"{where}: give one of api-keys, api-key-file or api-key-env")
    return problems


def _semantic_problems(config: Config) -> list[str]:
    problems: list[str] = []
    names: dict[str, int] = {}
    for i, model in enumerate(config.models):
        if model.name in names:
            problems.append(f"serving.models[{i}].name: duplicate of serving.models[{names[model.name]}]")
        names[model.name] = i
    known = set(names) | set(config.aliases) | {a for m in config.models for a in m.aliases}
    for i, model in enumerate(config.models):
        for target in model.fallback:
            if target not in known:
                problems.append(f"serving.models[{i}].fallback: {target!r} is not a model or alias")
    problems += _remote_model_problems(config)
    formatter = string.Formatter()
    for template in config.vllm_urls:
        for _, field_name, _, _ in formatter.parse(template):
            if field_name not in (None, "", "0", "model", "name", "slug", "port"):
                problems.append(f"serving.vllm-base-url: unknown field {{{field_name}}} in {template!r}")
    service = config.service
    needed = service.inflight_limit + service.queue_limit + 1
    if service.request_threads < needed:
        problems.append(
            f"gateway.threads: {service.request_threads} is fewer than max-inflight + queue-size + 1 = {needed}"
            " (queued requests wait on a thread each, and one is kept for /health); leave it unset to size it"
        )
    if service.backoff_max < service.backoff_base:
        problems.append("gateway.backoff-max: must be at least gateway.backoff-base")
    return problems
