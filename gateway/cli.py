"""``vilms-gateway serve | validate | route``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import types
from pathlib import Path

from gateway import __version__
from gateway.config import Config, ConfigError, load_config
from gateway.keys import KeysUnavailable

EXIT_INVALID = 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_INVALID
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"{exc.source}: invalid configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_INVALID
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    handler = {"serve": _serve, "validate": _validate, "route": _route}[args.command]
    return handler(config, args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vilms-gateway", description="OpenAI-compatible gateway for ViLMS edge boxes."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="serve HTTP in the foreground")
    serve.add_argument("--config", required=True, help="path to config.yaml")
    serve.add_argument("--host", help="listen address (default: gateway.host or 0.0.0.0)")
    serve.add_argument("--port", type=int, help="listen port (default: gateway.port or 8989)")
    serve.add_argument("--threads", type=int,
                       help="request threads (default: gateway.threads, else sized from the slots and queue)")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    validate = commands.add_parser("validate", help="check a config file; exit non-zero on any problem")
    validate.add_argument("--config", required=True)
    route = commands.add_parser("route", help="explain how a model name resolves")
    route.add_argument("--config", required=True)
    route.add_argument("model")
    return parser


def _without_httpx_cli() -> None:
    """Keep ``import httpx`` from importing httpx's command-line tool.

    httpx imports its CLI whenever click and rich are installed, and on a box with local embeddings
    they are (transformers needs typer, which needs both): rich, click and pygments then cost the
    serving process about 80 ms of start-up on a fast core (a quarter of it) and 6 MB of memory, for
    a tool it never runs. httpx falls back to a stub ``main`` when the import fails; this supplies
    that stub first. Only the server does it, before anything imports httpx."""
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return
    stub = types.ModuleType("httpx._main")

    def main() -> None:
        raise SystemExit("the httpx command-line tool is not loaded in the gateway process")

    stub.main = main  # type: ignore[attr-defined]
    sys.modules["httpx._main"] = stub


def _serve(config: Config, args: argparse.Namespace) -> int:
    _without_httpx_cli()
    from gateway.app import Gateway
    from gateway.serving.server import serve

    _configure_logging(args.log_level)
    if args.threads:
        # --threads sizes the request slots and backend pools too, not only waitress's pool.
        config = dataclasses.replace(config, service=dataclasses.replace(config.service, threads=args.threads))
    service = config.service
    needed = service.inflight_limit + service.queue_limit + 1
    if service.request_threads < needed:
        print(f"--threads {service.request_threads} is fewer than max-inflight + queue-size + 1 = {needed}",
              file=sys.stderr)
        return EXIT_INVALID
    try:
        gateway = Gateway(config)
    except (OSError, KeysUnavailable) as exc:  # an unreadable API key file, for one
        print(f"cannot start: {exc}", file=sys.stderr)
        return EXIT_INVALID
    serve(gateway, host=args.host or service.host, port=args.port or service.port)
    return 0


def _validate(config: Config, args: argparse.Namespace) -> int:
    key_file = config.service.api_key_file
    if key_file and not Path(key_file).is_file():
        print(f"{config.source}: invalid configuration:\n  gateway.api-key-file: {key_file} does not exist",
              file=sys.stderr)
        return EXIT_INVALID
    for i, model in enumerate(config.models):
        if model.remote and model.api_key_file and not Path(model.api_key_file).is_file():
            print(f"{config.source}: invalid configuration:\n  serving.models[{i}].api-key-file: "
                  f"{model.api_key_file} does not exist", file=sys.stderr)
            return EXIT_INVALID
    aliases = len(config.aliases) + sum(len(m.aliases) for m in config.models)
    embedding = "on" if config.embedding.enabled else "off"
    print(f"{config.source}: OK ({len(config.models)} models, {aliases} aliases, platform {config.platform}, "
          f"embeddings {embedding})")
    return 0


def _route(config: Config, args: argparse.Namespace) -> int:
    from gateway.errors import ModelNotFound
    from gateway.routing import Router

    try:
        print(Router(config).explain(args.model))
    except ModelNotFound as exc:
        print(exc.message, file=sys.stderr)
        return 1
    return 0


def _configure_logging(level: str) -> None:
    # The format below names no source file, thread or process; not gathering them for every
    # record is the logging docs' own advice. Access lines do not come this way (gateway/accesslog.py).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.setLevel(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "task queue depth" is expected under load


if __name__ == "__main__":
    raise SystemExit(main())
