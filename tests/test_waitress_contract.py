"""What gateway/serving/ relies on in waitress, checked by name, shape and source, so that an upgrade
fails here, with a message naming what changed, and not in the field.

waitress is pinned in pyproject.toml. To upgrade: change the pin, run this file, and for every
failure re-read the named waitress code against the gateway code the message names; when they
still fit, update the expected value here in the same commit.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import inspect
import re
import select
from pathlib import Path
from typing import Any

import pytest
import waitress
from waitress import parser as waitress_parser
from waitress import rfc7230, utilities, wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask, Task, ThreadedTaskDispatcher

ROOT = Path(__file__).resolve().parents[1]
TESTED_VERSION = "3.0.2"

# waitress code the gateway replaces, copies or depends on line by line, by a digest of its source:
# (digest, where the gateway depends on it). A change is not necessarily a break; it must be read.
SOURCES: dict[str, tuple[str, str]] = {
    "ThreadedTaskDispatcher.__init__": (
        "0479b29257f508a5", "server.py TurnTakingDispatcher uses lock, queue, queue_cv, thread_exit_cv, "
        "threads, active_count, stop_count as this sets them up"),
    "ThreadedTaskDispatcher.handler_thread": (
        "fe586964e3f09522", "server.py TurnTakingDispatcher.handler_thread is a copy of it, serving in turns"),
    "ThreadedTaskDispatcher.add_task": (
        "1028105a9aed367d", "server.py TurnTakingDispatcher.add_task replaces it (no notify while a turn is held)"),
    "ThreadedTaskDispatcher.shutdown": (
        "f2550ddbfb8d46b9", "handler_thread's stop protocol (stop_count, thread_exit_cv) must match it"),
    "ThreadedTaskDispatcher.set_thread_count": (
        "97cddfc021373f31", "server.py replaces queue_cv with idlethreads.LastIdleFirst: it must only notify_all "
        "it under lock (stopping threads)"),
    "HTTPChannel.handle_read": (
        "5f1fb08c95aa00cc", "channel.py HeadWithBodyChannel.handle_read replaces it (two readers, header timer)"),
    "HTTPChannel.readable": (
        "e4722238ce60c915", "channel.py HeadWithBodyChannel.readable/loop_is_watching call it and note its answer"),
    "HTTPChannel.writable": (
        "d0cbd4ae1b3ba2a3", "channel.py HeadWithBodyChannel.writable/loop_is_watching call it and note its answer"),
    "HTTPChannel.write_soon": (
        "20eedb92a8237c47", "channel.py HeadWithBodyChannel.write_soon sends directly when nothing is queued"),
    "HTTPChannel._flush_outbufs_below_high_watermark": (
        "27a2b75117abd0d7", "channel.py waits in it without the turn; it must block only on outbuf_lock"),
    "HTTPChannel._flush_some": (
        "fe7a9a752a419402", "channel.py's idle check relies on it setting last_activity after a send"),
    "HTTPChannel.handle_close": (
        "8f59b9aaa45566bb", "channel.py's stalled-client close relies on it notifying outbuf_lock"),
    "HTTPChannel.service": (
        "f73afa13748e1128", "channel.py: uses error_task_class/task_class; pulls the trigger at its end"),
    "HTTPChannel.received": (
        "08d6df73fb69da84", "channel.py: creates parser_class per request; turnreads.py reads through it"),
    "Task.build_response_header": (
        "2cf70b88816fabc1", "channel.py _HeadWithBodyTask writes the same head for the usual answer"),
    "Task.write": (
        "f9a97135b3b5d691", "channel.py _HeadWithBodyTask.write holds the head back for the first body bytes"),
    "ErrorTask.execute": (
        "4abe3262db04d291", "channel.py _OpenAIErrorTask.execute replaces it (OpenAI's error shape)"),
    "HTTPRequestParser.parse_header": (
        "c2c093b901782da6", "channel.py _OnePassParser fills headers as it does and adds its main branch's checks"),
    "BaseWSGIServer.maintenance": (
        "4ab5b7f595bc4253", "the idle timeout is its channel_timeout; it skips channels with requests"),
    "BaseWSGIServer.readable": (
        "4eea9c1036b55b41", "runs maintenance every cleanup_interval and applies connection_limit"),
    "BaseWSGIServer.run": (
        "f6d4f8a820ec7d93", "eventloop.py EpollLoop stands in for self.asyncore: run() calls its loop(map=self._map)"),
    "wasyncore.readwrite": (
        "2467235cc3f4eb51", "eventloop.py hands it epoll's flags (the kernel's POLL* bits) for each event"),
    "wasyncore.poll2": (
        "f2ea2bd150ff2600", "eventloop.py registers what this asks (readable, writable unless accepting), "
                            "and nothing for a channel that wants nothing"),
    "dispatcher.add_channel": (
        "bb7b639a471bc5bb", "eventloop.py ChannelMap notes connections by its map[fd] = self"),
    "dispatcher.del_channel": (
        "adbc7e4cb5fc9568", "eventloop.py ChannelMap notes connections gone by its del map[fd]"),
}
_OWNERS: dict[str, Any] = {
    "ThreadedTaskDispatcher": ThreadedTaskDispatcher, "HTTPChannel": HTTPChannel, "Task": Task,
    "ErrorTask": ErrorTask, "HTTPRequestParser": waitress_parser.HTTPRequestParser,
    "BaseWSGIServer": BaseWSGIServer, "waitress": waitress, "utilities": utilities,
    "wasyncore": wasyncore, "dispatcher": wasyncore.dispatcher,
}

# Methods the gateway calls or overrides, with the parameters it passes or expects.
SIGNATURES: dict[str, list[str]] = {
    "waitress.create_server": ["application", "map", "_start", "_sock", "_dispatcher", "kw"],
    "ThreadedTaskDispatcher.set_thread_count": ["self", "count"],
    "ThreadedTaskDispatcher.handler_thread": ["self", "thread_no"],
    "ThreadedTaskDispatcher.add_task": ["self", "task"],
    "ThreadedTaskDispatcher.shutdown": ["self", "cancel_pending", "timeout"],
    "HTTPChannel.send": ["self", "data", "do_close"],
    "HTTPChannel.write_soon": ["self", "data"],
    "HTTPChannel.received": ["self", "data"],
    "HTTPChannel._flush_outbufs_below_high_watermark": ["self"],
    "HTTPRequestParser.parse_header": ["self", "header_plus"],
    "Task.build_response_header": ["self"],
    "Task.set_close_on_finish": ["self"],
    "utilities.build_http_date": ["when"],
    "wasyncore.loop": ["timeout", "use_poll", "map", "count"],  # EpollLoop.loop takes the same
    "wasyncore.readwrite": ["obj", "flags"],
}

# Class attributes the gateway sets or reads (the seams: task_class, error_task_class, parser_class).
CLASS_ATTRIBUTES = {
    HTTPChannel: ["task_class", "error_task_class", "parser_class", "request", "last_activity", "will_close",
                  "close_when_flushed", "total_outbufs_len"],
    BaseWSGIServer: ["channel_class", "maintenance", "pull_trigger", "del_channel", "run", "asyncore", "accepting"],
    Task: ["wrote_header", "close_on_finish", "content_length", "chunked_response", "has_body"],
    waitress_parser.HTTPRequestParser: ["completed", "headers_finished", "chunked", "content_length", "error",
                                        "version", "connection_close"],
}

# waitress settings the gateway passes (gateway/serving/server.py, channel.py) or reads.
ADJUSTMENTS = ["threads", "connection_limit", "max_request_body_size", "asyncore_use_poll", "channel_timeout",
               "cleanup_interval", "ident", "clear_untrusted_proxy_headers", "channel_request_lookahead",
               "outbuf_high_watermark", "recv_bytes", "log_socket_errors", "asyncore_loop_timeout"]


def _resolve(qualified: str) -> Any:
    owner, name = qualified.split(".")
    found = getattr(_OWNERS[owner], name, None)
    assert found is not None, f"waitress's {qualified} is gone (renamed or removed); gateway/serving/ uses it"
    return found


def _digest(qualified: str) -> str:
    return hashlib.sha256(inspect.getsource(_resolve(qualified)).encode()).hexdigest()[:16]


def test_the_installed_waitress_is_the_pinned_one() -> None:
    pin = re.search(r'"waitress==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin is not None, "pyproject.toml must pin waitress to one version (waitress==X.Y.Z)"
    installed = importlib.metadata.version("waitress")
    assert pin.group(1) == TESTED_VERSION == installed, (
        f"waitress {installed} installed, {pin.group(1)} pinned, {TESTED_VERSION} under contract here: "
        "run this file against the new version and update TESTED_VERSION with what it asks")


@pytest.mark.parametrize("qualified", list(SOURCES))
def test_waitress_code_the_gateway_replaces_or_depends_on_is_unchanged(qualified: str) -> None:
    expected, where = SOURCES[qualified]
    assert _digest(qualified) == expected, (
        f"waitress's {qualified} changed: re-read it against gateway/serving/{where}; "
        f"then set its digest here to {_digest(qualified)!r}")


@pytest.mark.parametrize("qualified", list(SIGNATURES))
def test_waitress_methods_the_gateway_calls_keep_their_parameters(qualified: str) -> None:
    expected = SIGNATURES[qualified]
    parameters = list(inspect.signature(_resolve(qualified)).parameters)
    assert parameters == expected, f"waitress's {qualified} now takes {parameters}, gateway/serving/ passes {expected}"


@pytest.mark.parametrize("owner", list(CLASS_ATTRIBUTES), ids=lambda owner: owner.__name__)
def test_waitress_class_attributes_the_gateway_sets_or_reads_exist(owner: type) -> None:
    missing = [name for name in CLASS_ATTRIBUTES[owner] if not hasattr(owner, name)]
    assert not missing, f"waitress's {owner.__name__} no longer has {missing} (gateway/serving/ uses them)"


def test_instance_state_the_gateway_reads_is_set_up_by_waitress() -> None:
    dispatcher = ThreadedTaskDispatcher()
    for name in ("lock", "queue", "queue_cv", "thread_exit_cv", "threads", "active_count", "stop_count", "logger"):
        assert hasattr(dispatcher, name), f"ThreadedTaskDispatcher() no longer sets {name} (TurnTakingDispatcher)"
    server = waitress.create_server(lambda environ, start_response: [], host="127.0.0.1", port=0,
                                    _dispatcher=dispatcher)
    try:
        for name in ("active_channels", "trigger", "adj", "effective_port", "socket", "task_dispatcher"):
            assert hasattr(server, name), f"waitress's server no longer has {name} (gateway/serving/server.py)"
        assert server.task_dispatcher is dispatcher, "create_server(_dispatcher=...) no longer supplies the pool"
        assert isinstance(server.active_channels, dict)
        assert "thunk" in inspect.signature(server.trigger.pull_trigger).parameters, "trigger.pull_trigger(thunk)"
    finally:
        server.close()


def test_waitress_uses_queue_cv_only_as_last_idle_first_provides() -> None:
    """gateway/serving/idlethreads.py's LastIdleFirst stands in for the pool's ``queue_cv``: it has
    ``wait()`` without a timeout, ``notify()`` and ``notify_all()``, and no other calls."""
    source = inspect.getsource(ThreadedTaskDispatcher)
    uses, references = [], 0
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Attribute) and owner.attr == "queue_cv":
                uses.append((node.func.attr, len(node.args) + len(node.keywords)))
        references += isinstance(node, ast.Attribute) and node.attr == "queue_cv"
    # every reference is a call's owner, but for the assignment in __init__ (no `with`, no passing it on)
    assert references == len(uses) + 1, "waitress uses queue_cv other than by calling it: re-read idlethreads.py"
    assert uses, "waitress's ThreadedTaskDispatcher no longer uses queue_cv: re-read gateway/serving/idlethreads.py"
    unexpected = {use for use in uses if use not in {("wait", 0), ("notify", 0), ("notify_all", 0)}}
    assert not unexpected, f"waitress now calls queue_cv.{sorted(unexpected)} (name, argument count): see LastIdleFirst"


def test_epoll_reports_events_in_the_bits_waitress_reads() -> None:
    if not hasattr(select, "epoll"):
        pytest.skip("epoll is Linux's")
    assert (select.EPOLLIN, select.EPOLLPRI, select.EPOLLOUT, select.EPOLLERR, select.EPOLLHUP) == (
        select.POLLIN, select.POLLPRI, select.POLLOUT, select.POLLERR, select.POLLHUP)


def test_adjustments_the_gateway_passes_are_accepted() -> None:
    known = {name for name, _ in Adjustments._params}
    assert not set(ADJUSTMENTS) - known, f"waitress no longer accepts {sorted(set(ADJUSTMENTS) - known)}"
    assert Adjustments.outbuf_high_watermark == 16 * 1024 * 1024  # docs/configuration.md says 16 MiB


def test_private_and_module_level_names_the_gateway_imports_exist() -> None:
    for module, name in ((wasyncore, "_DISCONNECTED"), (rfc7230, "TOKEN"), (rfc7230, "OWS"),
                         (rfc7230, "FIELD_VALUE"), (waitress_parser, "ParsingError")):
        assert hasattr(module, name), f"{module.__name__}.{name} is gone (gateway/serving/ imports it)"
    assert isinstance(wasyncore._DISCONNECTED, frozenset)


def test_only_gateway_serving_imports_waitress() -> None:
    """Also enforced by ruff (TID251, pyproject.toml); this holds where ruff's settings are not read."""
    offenders = []
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        if (ROOT / "gateway" / "serving") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name == "waitress" or name.startswith("waitress.") for name in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"waitress imported outside gateway/serving/: {offenders}"
