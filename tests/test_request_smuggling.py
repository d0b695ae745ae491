"""Request smuggling against a served gateway: every head whose framing two HTTP parsers could read
differently is answered 400 in OpenAI's error shape and its connection closed, and nothing of it
(nor of a request hidden behind it) reaches an engine. Where waitress's parser accepts a form
(obs-fold in an ordinary field), the gateway does exactly what it does."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator

import pytest

from tests.gateway_harness import LiveGateway, gateway_config, live_gateway
from tests.standins.fixtures import StandinServer

BODY = json.dumps({"model": "qwen3:4b", "messages": [{"role": "user", "content": "hi"}]}).encode()
SMUGGLED = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n" \
           b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
START = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"


def _chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


CASES = {
    "conflicting Content-Length": START + b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                                  b"Content-Length: 0\r\n\r\n%s" % (len(BODY), BODY) + SMUGGLED,
    "duplicate Content-Length": START + b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                                b"Content-Length: %d\r\n\r\n%s" % (len(BODY), len(BODY), BODY),
    "Content-Length with chunked": START + b"Content-Type: application/json\r\nContent-Length: 5\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(BODY) + SMUGGLED,
    "chunked with Content-Length": START + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                                   b"Content-Length: %d\r\n\r\n" % len(BODY) + _chunked(BODY),
    "obs-fold in Content-Length": START + b"Content-Type: application/json\r\nContent-Length: %d\r\n 0\r\n\r\n%s"
                                  % (len(BODY), BODY),
    "bare LF in a field": START + b"Content-Type: application/json\r\nX-A: 1\nContent-Length: 0\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY),
    "duplicate Host": b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nHost: other\r\n"
                      b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY),
    "duplicate Content-Type": START + b"Content-Type: application/json\r\nContent-Type: text/plain\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY),
}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[LiveGateway, StandinServer]]:
    with StandinServer.ollama(models=["qwen3:4b"], name="engine") as backend:
        doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[backend.url])
        with live_gateway(doc, threads=4, adjustments={"header_timeout": 1.0}) as live:
            yield live, backend


def _exchange(live: LiveGateway, raw: bytes) -> tuple[bytes, bool]:
    """Sends ``raw`` and reads until the gateway closes the connection: (what came back, closed)."""
    with socket.create_connection(live.address, timeout=15) as sock:
        sock.sendall(raw)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            pass
        return received, True


@pytest.mark.parametrize("case", list(CASES))
def test_ambiguous_framing_is_a_400_that_closes_and_forwards_nothing(
    served: tuple[LiveGateway, StandinServer], case: str
) -> None:
    live, backend = served
    backend.reset()
    received, closed = _exchange(live, CASES[case])
    # HTTP/1.0 where the head was refused before its request line was read, as waitress answers
    assert re.match(rb"HTTP/1\.[01] 400 ", received), received[:200]
    assert received.count(b"HTTP/1.") == 1, "a request hidden behind the first was answered"
    body = json.loads(received.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["type"] == "invalid_request_error"
    assert closed
    assert backend.bodies("/v1/chat/completions") == [], "something reached the engine"


def test_obs_fold_in_an_ordinary_field_is_read_as_waitress_reads_it(
    served: tuple[LiveGateway, StandinServer],
) -> None:
    live, backend = served
    backend.reset()
    raw = START + b"X-Note: one\r\n  two\r\nContent-Type: application/json\r\nConnection: close\r\n" \
                  b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
    received, _closed = _exchange(live, raw)
    assert received.startswith(b"HTTP/1.1 200 "), received[:300]
    assert len(backend.bodies("/v1/chat/completions")) == 1


def test_a_head_with_bare_lf_line_ends_is_never_read_and_is_dropped(
    served: tuple[LiveGateway, StandinServer],
) -> None:
    """waitress finds a head's end only at CRLF CRLF: a head in bare LFs never completes, so it is
    never answered nor forwarded; the header timeout drops the connection."""
    live, backend = served
    backend.reset()
    raw = b"POST /v1/chat/completions HTTP/1.1\nHost: gw\nContent-Type: application/json\n" \
          b"Content-Length: %d\n\n%s" % (len(BODY), BODY)
    received, closed = _exchange(live, raw)
    assert received == b"" and closed
    assert backend.bodies("/v1/chat/completions") == []
