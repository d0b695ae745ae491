"""The `ollama` client subcommands (pull, list, rm, ps, show, run, --version) against OLLAMA_HOST.

Roles often run `docker exec <ctr> ollama pull <model>`; inside the stand-in image `ollama` is this.
Output mimics the real CLI's plain (non-TTY) output closely enough for `changed_when` checks.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

VERSION = os.environ.get("STANDIN_OLLAMA_VERSION", "0.13.1")


def _base_url() -> str:
    raw = (os.environ.get("OLLAMA_HOST") or "127.0.0.1:11434").strip()
    scheme = "http"
    if "://" in raw:
        scheme, raw = raw.split("://", 1)
    host, sep, port = raw.rstrip("/").rpartition(":")
    if not sep:
        host, port = raw.rstrip("/"), "11434"
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"{scheme}://{host}:{port}"


def _request(method: str, path: str, body: Any = None) -> urllib.request.Request:
    data = json.dumps(body).encode() if body is not None else None
    return urllib.request.Request(
        _base_url() + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )


def _call(method: str, path: str, body: Any = None) -> Any:
    with urllib.request.urlopen(_request(method, path, body), timeout=600) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def _lines(path: str, body: Any) -> Iterator[dict[str, Any]]:
    with urllib.request.urlopen(_request("POST", path, body), timeout=600) as resp:
        for line in resp:
            if line.strip():
                yield json.loads(line)


def _human_size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("    ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def _error_of(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("error"))
    except (ValueError, AttributeError):
        return f"{exc.code} {exc.reason}"


def cmd_pull(args: list[str]) -> int:
    for name in args:
        for event in _lines("/api/pull", {"model": name, "stream": True}):
            if "error" in event:
                print(f"Error: {event['error']}", file=sys.stderr)
                return 1
            status = event.get("status", "")
            if "total" in event and "completed" in event:
                if event["completed"] == event["total"]:
                    print(f"{status} 100% {_human_size(event['total'])}")
            elif "total" not in event:
                print(status)
    return 0


def cmd_list(args: list[str]) -> int:
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    for m in _call("GET", "/api/tags")["models"]:
        rows.append([m["name"], m["digest"][:12], _human_size(m["size"]), m["modified_at"][:19].replace("T", " ")])
    _table(rows)
    return 0


def cmd_rm(args: list[str]) -> int:
    for name in args:
        _call("DELETE", "/api/delete", {"model": name})
        print(f"deleted '{name}'")
    return 0


def cmd_ps(args: list[str]) -> int:
    rows = [["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]]
    for m in _call("GET", "/api/ps")["models"]:
        rows.append(
            [
                m["name"],
                m["digest"][:12],
                _human_size(m["size"]),
                "100% GPU",
                str(m.get("context_length", "")),
                m["expires_at"][:19],
            ]
        )
    _table(rows)
    return 0


def cmd_show(args: list[str]) -> int:
    info = _call("POST", "/api/show", {"model": args[0]})
    d = info["details"]
    print("  Model")
    print(f"    architecture        {d['family']}")
    print(f"    parameters          {d['parameter_size']}")
    print(f"    quantization        {d['quantization_level']}")
    print("\n  Capabilities")
    for cap in info.get("capabilities", []):
        print(f"    {cap}")
    return 0


def cmd_run(args: list[str]) -> int:
    prompt = " ".join(args[1:]) or sys.stdin.read()
    out = _call("POST", "/api/generate", {"model": args[0], "prompt": prompt, "stream": False})
    print(out.get("response", ""))
    return 0


COMMANDS = {
    "pull": cmd_pull,
    "list": cmd_list,
    "ls": cmd_list,
    "rm": cmd_rm,
    "ps": cmd_ps,
    "show": cmd_show,
    "run": cmd_run,
}


def main(argv: list[str]) -> int:
    if argv[0] in ("-v", "--version", "version"):
        try:
            print(f"ollama version is {_call('GET', '/api/version')['version']}")
        except OSError:
            print("Warning: could not connect to a running Ollama instance")
            print(f"Warning: client version is {VERSION}")
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f'Error: unknown command "{argv[0]}" for "ollama"', file=sys.stderr)
        return 1
    if argv[0] not in ("list", "ls", "ps") and len(argv) < 2:
        print(f'Error: "ollama {argv[0]}" requires at least 1 arg(s)', file=sys.stderr)
        return 1
    for attempt in range(2):
        try:
            return command(argv[1:])
        except urllib.error.HTTPError as exc:
            print(f"Error: {_error_of(exc)}", file=sys.stderr)
            return 1
        except OSError:
            if attempt:
                break
            time.sleep(0.5)
    print("Error: could not connect to ollama app, is it running?", file=sys.stderr)
    return 1
