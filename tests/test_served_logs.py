"""Where a served gateway's lines go: one JSON access line per request on stdout (journald's
stream for the unit), its own messages on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.gateway_harness import gateway_config
from tests.served_gateway import serve, wait_until
from tests.standins.fixtures import StandinServer


def test_served_gateway_writes_one_access_line_per_request_on_stdout(ollama_a: StandinServer, tmp_path: Path) -> None:
    doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[ollama_a.url])
    with serve(doc, tmp_path) as served, httpx.Client(base_url=served.url, timeout=10) as client:
        chat = client.post("/v1/chat/completions", headers={"X-Request-ID": "edge-1"},
                           json={"model": "qwen3:4b", "messages": [{"role": "user", "content": "hi"}]})
        missing = client.get("/v1/nothing-here", headers={"X-Request-ID": "edge-2"})
        assert chat.status_code == 200 and missing.status_code == 404
        assert wait_until(lambda: served.stdout().count("\n") >= 2, 5), served.stdout()
        lines = [json.loads(line) for line in served.stdout().splitlines()]
    by_id = {line["request_id"]: line for line in lines}
    assert by_id["edge-1"]["status"] == 200 and by_id["edge-1"]["model"] == "qwen3:4b"
    assert by_id["edge-1"]["path"] == "/v1/chat/completions" and by_id["edge-1"]["ms"] >= 0
    assert by_id["edge-2"]["status"] == 404
    assert "listening on" in served.stderr() and "edge-1" not in served.stderr()
