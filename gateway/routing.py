"""Model name -> alias chain -> model entry -> engine -> ordered endpoints, computed once per config.

The engine rules keep the old gateway's priority order; every route records which rule decided, so
``vilms-gateway route`` can explain it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from gateway.config import Config, ModelEntry, expand_url, normalize_base_url, remote_base_url
from gateway.errors import ModelNotFound
from gateway.keys import KeysUnavailable, load_keys

# The old gateway retried between the loopback name and the compose service name of each engine.
_ALTERNATE_HOST = {"ollama": ("vilms-ollama", 11434), "vllm": ("vilms-vllm", 8000)}
_MAX_ALIAS_HOPS = 16


@dataclass(frozen=True)
class Target:
    """One model served by one engine, with the endpoints to try in order."""

    model: ModelEntry
    engine: str
    reason: str
    endpoints: tuple[str, ...]


@dataclass(frozen=True)
class Route:
    requested: str
    alias_chain: tuple[str, ...]
    targets: tuple[Target, ...]  # the primary first, then the fallback chain
    local_embedding: bool = False  # served by the embedding section, not by an engine model

    @property
    def primary(self) -> Target:
        return self.targets[0]

    @property
    def owned_by(self) -> str:
        """``vilms``, or for an engine: openai model the service's host name."""
        if self.targets and self.primary.model.remote:
            return urlsplit(self.primary.endpoints[0]).hostname or "vilms"
        return "vilms"


class Router:
    def __init__(self, config: Config) -> None:
        self._config = config
        self._models = {m.name: m for m in config.models}
        self._alias_map: dict[str, str] = {}
        for model in config.models:
            for alias in model.aliases:
                self._alias_map.setdefault(alias, model.name)
        if config.embedding.enabled:
            for alias in config.embedding.aliases:
                self._alias_map.setdefault(alias, config.embedding.model)
        for alias, target in config.aliases.items():
            self._alias_map.setdefault(alias, target)
        self._routes: dict[str, Route] = {}
        for name in [*self._models, *self._alias_map, *self._embedding_names()]:
            route = self._build(name)
            if route is not None:
                self._routes[name] = route

    # -- queries -------------------------------------------------------------------------------
    def resolve(self, name: str) -> Route:
        route = self._routes.get(name)
        if route is None:
            raise ModelNotFound(
                f"The model {name!r} does not exist on this gateway. "
                f"Available models: {', '.join(self.model_names()) or 'none'}.",
                param="model",
            )
        return route

    def model_names(self) -> list[str]:
        names = [m.name for m in self._config.models]
        if self._config.embedding.enabled:
            names.append(self._config.embedding.model)
        return names

    def public_ids(self) -> list[tuple[str, str]]:
        """``(id, what it resolves to)`` for every model and alias this box serves."""
        return [(name, route.alias_chain[-1]) for name, route in self._routes.items()]

    def endpoints(self) -> dict[str, str]:
        """Every distinct backend base URL and the engine behind it (for probes and metrics)."""
        seen: dict[str, str] = {}
        for route in self._routes.values():
            for target in route.targets:
                if target.model.remote:
                    continue  # not the box's own engines: see remote_endpoints
                for url in target.endpoints:
                    seen.setdefault(url, target.engine)
        return seen

    def remote_endpoints(self) -> dict[str, str]:
        """Every engine: openai base URL (peer boxes, cloud services) and the model entry it serves."""
        seen: dict[str, str] = {}
        for model in self._config.models:
            if model.remote:
                for url in self._endpoints_for(model, "openai"):
                    seen.setdefault(url, model.name)
        return seen

    def explain(self, name: str) -> str:
        route = self.resolve(name)
        lines = [f"model {name!r}"]
        if len(route.alias_chain) > 1:
            lines.append("  aliases: " + " -> ".join(route.alias_chain))
        if route.local_embedding:
            emb = self._config.embedding
            where = emb.base_url or f"local sentence-transformers ({emb.model}, device {emb.device})"
            lines.append(f"  embeddings served by {where}")
            return "\n".join(lines)
        ordered = [t for t in route.targets if not t.model.remote] + [t for t in route.targets if t.model.remote]
        for i, target in enumerate(ordered):
            label = "primary" if i == 0 else f"fallback {i}"
            if target.model.remote:
                lines.append(f"  {label}: {target.model.name} beyond the box ({_remote_summary(target.model)})")
            else:
                lines.append(f"  {label}: {target.model.name} on {target.engine} ({target.reason})")
            for j, url in enumerate(target.endpoints, 1):
                lines.append(f"    {j}. {url}")
        if any(t.model.remote for t in route.targets):
            lines.append("  order: the box's own engines first, cooled-down ones included; then engine: openai")
        return "\n".join(lines)

    # -- construction --------------------------------------------------------------------------
    def _embedding_names(self) -> list[str]:
        return [self._config.embedding.model] if self._config.embedding.enabled else []

    def _chain(self, name: str) -> tuple[str, ...]:
        chain = [name]
        while chain[-1] not in self._models and chain[-1] in self._alias_map:
            nxt = self._alias_map[chain[-1]]
            if nxt in chain or len(chain) > _MAX_ALIAS_HOPS:
                break
            chain.append(nxt)
        return tuple(chain)

    def _build(self, name: str) -> Route | None:
        chain = self._chain(name)
        final = chain[-1]
        model = self._models.get(final)
        if model is None:
            if final in self._embedding_names():
                return Route(name, chain, (), local_embedding=True)
            return None  # an alias to nothing this box serves
        targets: list[Target] = []
        self._collect(model, name, targets, visited=set())
        return Route(name, chain, tuple(targets))

    def _collect(self, model: ModelEntry, requested: str, out: list[Target], visited: set[str]) -> None:
        if model.name in visited:
            return
        visited.add(model.name)
        engine, reason = self.choose_engine(model, requested)
        out.append(Target(model, engine, reason, self._endpoints_for(model, engine)))
        for fallback in model.fallback:
            nxt = self._models.get(self._chain(fallback)[-1])
            if nxt is not None:
                self._collect(nxt, fallback, out, visited)

    def choose_engine(self, model: ModelEntry, requested: str) -> tuple[str, str]:
        config = self._config
        if model.remote:
            return "openai", "the model's engine is openai"
        if config.forced_engine == "ollama":
            return "ollama", "serving.engine is ollama"
        if config.platform in ("jetson", "cpu"):
            return "ollama", f"host.platform is {config.platform}"
        if model.engine:
            return model.engine, f"the model's engine is {model.engine}"
        if model.type == "vlm":
            return "ollama", "the model's type is vlm"
        if "vl" in requested.lower() or "vl" in model.name.lower():
            return "ollama", "the name contains 'vl'"
        return "vllm", "default for text models on dgpu"

    def _endpoints_for(self, model: ModelEntry, engine: str) -> tuple[str, ...]:
        if model.remote:
            return tuple(remote_base_url(u) for u in model.base_urls)
        if model.base_urls:
            return tuple(dict.fromkeys(expand_url(u, model) for u in model.base_urls))
        templates = self._config.ollama_urls if engine == "ollama" else self._config.vllm_urls
        urls = [expand_url(t, model) for t in templates]
        if self._config.alternate_hosts:
            urls += [alt for u in urls if (alt := _alternate(u, engine))]
        return tuple(dict.fromkeys(urls))


def _remote_summary(model: ModelEntry) -> str:
    try:
        count = f"{len(load_keys(model))} API keys"
    except KeysUnavailable as exc:
        count = f"no API keys: {exc}"
    if model.api_key_file:
        count += f" from {model.api_key_file}"
    elif model.api_key_env:
        count += f" from ${model.api_key_env}"
    budget = f", at most {model.max_requests_per_day} requests a day" if model.max_requests_per_day is not None else ""
    served_as = f", asked for as {model.upstream_model!r}" if model.upstream_model else ""
    return f"engine openai, {count}{budget}{served_as}"


def _alternate(url: str, engine: str) -> str | None:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    service, default_port = _ALTERNATE_HOST[engine]
    if host in ("localhost", "127.0.0.1"):
        new_host = service
    elif host == service:
        new_host = "localhost"
    else:
        return None
    netloc = f"{new_host}:{parts.port or default_port}"
    return normalize_base_url(urlunsplit((parts.scheme, netloc, parts.path, "", "")))
