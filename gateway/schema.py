"""The cerberus schema of the gateway's config file, and the flattening of cerberus errors into
``key.path[2].leaf: problem`` lines an operator can act on."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from cerberus import Validator, errors

_URL = {"type": "string", "regex": r"^https?://\S+$"}
_URL_LIST = {"type": "list", "schema": _URL}
_POSITIVE = {"type": "number", "min": 0.001}
_NAME_LIST = {"type": "list", "schema": {"type": "string", "empty": False}}
_ENGINES = ["ollama", "vllm"]
_MODEL_ENGINES = [*_ENGINES, "openai"]  # openai: a service beyond the box, per model only
PLATFORMS = ["dgpu", "js", "jetson", "cpu"]


def _params_check(field: str, value: Any, error: Any) -> None:
    # The old format writes params as a list of one-key dicts; both forms are accepted.
    if isinstance(value, dict) or value is None:
        return
    if not isinstance(value, list):
        error(field, "must be a mapping or a list of one-key mappings")
        return
    for i, item in enumerate(value):
        if not (isinstance(item, dict) and len(item) == 1):
            error(field, f"item {i} must be a mapping with exactly one key, got {item!r}")


def _network_check(field: str, value: Any, error: Any) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        error(field, f"{value!r} is not an IP network (like 192.168.10.0/24, 10.0.0.7 or fd00::/8)")


def _env_name_check(field: str, value: Any, error: Any) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        error(field, f"{value!r} is not an environment variable name")


MODEL_SCHEMA: dict[str, Any] = {
    "name": {"type": "string", "required": True, "empty": False},
    "type": {"type": "string", "empty": False},
    "engine": {"type": "string", "allowed": _MODEL_ENGINES, "nullable": True},
    "aliases": _NAME_LIST,
    "params": {"check_with": _params_check, "nullable": True},
    "base-url": {**_URL, "nullable": True},
    "hosts": _URL_LIST,
    "port": {"type": "integer", "min": 1, "max": 65535, "nullable": True},
    "fallback": _NAME_LIST,
    "path": {"type": "string", "nullable": True},
    # engine: openai (docs/configuration.md, "Beyond the box")
    "api-keys": {"type": "list", "schema": {"type": "string", "empty": False}},
    "api-key-file": {"type": "string", "empty": False, "nullable": True},
    "api-key-env": {"type": "string", "check_with": _env_name_check, "nullable": True},
    "key-cooldown": {"type": "number", "min": 0},
    "max-requests-per-day": {"type": "integer", "min": 0, "nullable": True},
    "upstream-model": {"type": "string", "empty": False, "nullable": True},
}

SCHEMA: dict[str, Any] = {
    "host": {
        "type": "dict",
        "allow_unknown": True,
        "schema": {"platform": {"type": "string", "allowed": PLATFORMS}},
    },
    "docker": {"type": "dict", "allow_unknown": True, "nullable": True},
    "serving": {
        "type": "dict",
        "schema": {
            "engine": {"type": "string", "allowed": _ENGINES, "nullable": True},
            "base-url": {**_URL, "nullable": True},
            "ollama-base-url": {**_URL, "nullable": True},
            "vllm-base-url": {**_URL, "nullable": True},
            "default-max-frames": {"type": "integer", "min": 1},
            "ollama-hosts": _URL_LIST,
            "vllm-hosts": _URL_LIST,
            "alternate-hosts": {"type": "boolean"},
            "models": {"type": "list", "schema": {"type": "dict", "schema": MODEL_SCHEMA}},
        },
    },
    "model-aliases": {
        "type": "dict",
        "nullable": True,
        "keysrules": {"type": "string"},
        "valuesrules": {"type": "string", "empty": False},
    },
    "embedding": {
        "type": "dict",
        "nullable": True,
        "schema": {
            "enabled": {"type": "boolean"},
            "model": {"type": "string", "nullable": True},
            "base-url": {**_URL, "nullable": True},
            "device": {"type": "string", "allowed": ["auto", "cpu", "cuda"]},
            "batch-size": {"type": "integer", "min": 1, "max": 4096},
            "idle-unload-seconds": {"type": "number", "min": 0},
            "aliases": _NAME_LIST,
            "api-key": {"type": "string", "nullable": True},
            "catch-all": {"type": "boolean"},
        },
    },
    "gateway": {
        "type": "dict",
        "nullable": True,
        "schema": {
            "host": {"type": "string", "empty": False},
            "port": {"type": "integer", "min": 1, "max": 65535},
            "threads": {"type": "integer", "min": 1, "max": 8192, "nullable": True},
            "connection-limit": {"type": "integer", "min": 1},
            "max-inflight": {"type": "integer", "min": 1, "nullable": True},
            "queue-size": {"type": "integer", "min": 0, "nullable": True},
            "queue-timeout": {"type": "number", "min": 0},
            "idle-timeout": _POSITIVE,
            "header-timeout": _POSITIVE,
            "max-body-bytes": {"type": "integer", "min": 1024},
            "api-keys": {"type": "list", "schema": {"type": "string", "minlength": 8}},
            "api-key-file": {"type": "string", "nullable": True},
            "connect-timeout": _POSITIVE,
            "read-timeout": _POSITIVE,
            "engine-idle-seconds": _POSITIVE,
            "request-deadline": _POSITIVE,
            "retries": {"type": "integer", "min": 0, "max": 10},
            "backoff-base": {"type": "number", "min": 0},
            "backoff-max": {"type": "number", "min": 0},
            "cooldown-failures": {"type": "integer", "min": 1},
            "cooldown-seconds": {"type": "number", "min": 0},
            "probe-interval": _POSITIVE,
            "image-max-bytes": {"type": "integer", "min": 1024},
            "image-fetch-timeout": _POSITIVE,
            "image-fetch-networks": {
                "type": "list", "nullable": True, "schema": {"type": "string", "check_with": _network_check},
            },
            "access-log": {"type": "boolean"},
            "drain-seconds": {"type": "number", "min": 0},
        },
    },
}


def validate_document(document: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Return ``(errors, warnings)`` as ``path: message`` lines.

    Unknown keys inside the old format's sections are warnings, not errors: an unchanged config
    from the old gateway must keep working even if it carries keys that gateway never read.
    Unknown keys in the new ``gateway`` section are errors, because a typo there silently loses a limit.
    """
    validator = Validator(SCHEMA, allow_unknown=False)
    validator.validate(document)
    problems: list[str] = []
    warnings: list[str] = []
    for err in _leaf_errors(validator._errors):
        path = format_path(err.document_path)
        if err.code == errors.UNKNOWN_FIELD.code:
            if path.startswith("gateway."):
                problems.append(f"{path}: unknown key")
            else:
                warnings.append(f"{path}: unknown key (ignored)")
            continue
        problems.append(f"{path}: {_describe(err)}")
    return problems, warnings


def _leaf_errors(errs: Any) -> list[Any]:
    out: list[Any] = []
    for err in errs:
        if err.is_group_error:
            out.extend(_leaf_errors(err.child_errors))
        else:
            out.append(err)
    return out


def format_path(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def _describe(err: Any) -> str:
    if err.rule == "allowed":
        choices = ", ".join(repr(c) for c in err.constraint)
        return f"unallowed value {err.value!r} (allowed: {choices})"
    if err.rule == "type":
        return f"must be of {err.constraint} type, got {err.value!r}"
    if err.rule == "required":
        return "required field is missing"
    if err.rule == "regex":
        return f"{err.value!r} is not an http(s) URL"
    if err.rule == "check_with" and err.info:
        return str(err.info[0])
    message = errors.BasicErrorHandler.messages.get(err.code, "invalid value")
    try:
        return str(message.format(*err.info, constraint=err.constraint, field=err.field, value=err.value))
    except (IndexError, KeyError):
        return str(message)
