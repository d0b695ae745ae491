"""The gateway served by waitress on loopback, used by the official openai client as a LAN client would."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from waitress.channel import HTTPChannel

from gateway.serving.channel import HeadWithBodyChannel
from tests.gateway_harness import LiveGateway, build, gateway_config, live_gateway
from tests.standins.fixtures import StandinServer

USER = [{"role": "user", "content": "hello"}]


def test_openai_client_models_chat_stream_and_404(ollama_a: StandinServer) -> None:
    doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama", "aliases": ["LLM"]}], ollama=[ollama_a.url])
    with live_gateway(doc) as live:
        client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
        assert {"qwen3:4b", "LLM"} <= {m.id for m in client.models.list()}
        reply = client.chat.completions.create(model="LLM", messages=USER)
        assert reply.choices[0].message.content == "[ollama-a] qwen3:4b: hello (images: 0)"
        stream = client.chat.completions.create(model="LLM", messages=USER, stream=True,
                                                stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "[ollama-a] qwen3:4b: hello (images: 0)"
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-4o", messages=USER)


def test_openai_client_raises_its_proper_exception_types(ollama_a: StandinServer) -> None:
    doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[ollama_a.url],
                         gateway={"api-keys": ["sk-correct-horse-battery"]})
    with live_gateway(doc) as live:
        bad_key = openai.OpenAI(base_url=live.url + "/v1", api_key="sk-wrong-key-xxxxxx", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad_key.models.list()
        client = openai.OpenAI(base_url=live.url + "/v1", api_key="sk-correct-horse-battery", max_retries=0)
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="qwen3:4b", messages=[])
        ollama_a.set_fault("error429")
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="qwen3:4b", messages=USER)
        ollama_a.set_fault("error500")
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="qwen3:4b", messages=USER)


def test_openai_client_keeps_working_while_one_of_two_hosts_is_down(
    ollama_a: StandinServer, ollama_b: StandinServer
) -> None:
    doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[ollama_a.url, ollama_b.url])
    with live_gateway(doc) as live:
        client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
        ollama_a.stop()
        for _ in range(5):
            reply = client.chat.completions.create(model="qwen3:4b", messages=USER)
            assert "[ollama-b]" in (reply.choices[0].message.content or "")
            assert list(client.chat.completions.create(model="qwen3:4b", messages=USER, stream=True))


def test_sse_chunks_reach_the_client_at_the_backend_pace() -> None:
    # waitress has a history of holding streamed output in its buffers; each chunk must arrive on its own.
    with StandinServer.ollama(models=["qwen3:4b"], name="paced", chunks=6, chunk_delay=0.25) as paced:
        doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[paced.url])
        with live_gateway(doc) as live:
            arrivals: list[float] = []
            started = time.monotonic()
            with httpx.stream("POST", live.url + "/v1/chat/completions", timeout=10,
                              json={"model": "qwen3:4b", "messages": USER, "stream": True}) as resp:
                for line in resp.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        arrivals.append(time.monotonic() - started)
    assert len(arrivals) >= 6
    # The first content arrives long before the stream ends, and the gaps follow the backend's pace.
    assert arrivals[0] < 0.6
    assert arrivals[-1] - arrivals[0] > 1.0
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert sum(1 for g in gaps if g > 0.15) >= 4


def test_health_answers_while_every_worker_slot_is_streaming(ollama_a: StandinServer) -> None:
    ollama_a.set_fault("hang")
    doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[ollama_a.url],
                         gateway={"threads": 3, "request-deadline": 3, "read-timeout": 3})
    with live_gateway(doc, threads=3) as live:
        results: list[int] = []

        def call() -> None:
            resp = httpx.post(live.url + "/v1/chat/completions", timeout=10,
                              json={"model": "qwen3:4b", "messages": USER})
            results.append(resp.status_code)

        workers = [threading.Thread(target=call) for _ in range(4)]
        for w in workers:
            w.start()
        time.sleep(0.5)
        started = time.monotonic()
        assert httpx.get(live.url + "/health", timeout=2).status_code == 200
        assert time.monotonic() - started < 1.0
        for w in workers:
            w.join()
    assert sorted(results) == [429, 429, 504, 504]


@pytest.mark.parametrize("sigint", [
    pytest.param(signal.SIG_DFL, id="sigint-default"),
    # What a script's `vilms-gateway serve &` (or a supervisor) may hand down: the drain must still end.
    pytest.param(signal.SIG_IGN, id="sigint-ignored-by-the-parent"),
])
def test_sigterm_drains_in_flight_requests(tmp_path: Path, sigint: signal.Handlers) -> None:
    with StandinServer.ollama(models=["qwen3:4b"], name="slow") as backend:
        backend.set_fault("slow", seconds=1.5)
        doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[backend.url])
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(doc))
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--host", "127.0.0.1",
             "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url)
            outcome: dict[str, int] = {}

            def call() -> None:
                resp = httpx.post(url + "/v1/chat/completions", timeout=10,
                                  json={"model": "qwen3:4b", "messages": USER})
                outcome["status"] = resp.status_code

            worker = threading.Thread(target=call)
            worker.start()
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            worker.join(timeout=10)
            assert outcome.get("status") == 200
            assert proc.wait(timeout=10) == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            with pytest.raises(httpx.ConnectError):
                httpx.get(url + "/health", timeout=1)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("gateway did not come up")


def test_openai_client_embeddings_with_the_local_engine() -> None:
    doc = gateway_config([], embedding={"enabled": True, "model": "sentence-transformers/all-MiniLM-L6-v2",
                                        "device": "cpu", "aliases": ["Embedding"]})
    with live_gateway(doc) as live:
        client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
        # The client asks for base64 by default and decodes it back to floats.
        result = client.embeddings.create(model="Embedding", input=["a dog runs", "a puppy is running", "tax law"])
    vectors = [item.embedding for item in result.data]
    assert [len(v) for v in vectors] == [384, 384, 384]

    def cosine(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        return dot / (sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5)

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    assert result.usage.prompt_tokens > 0


class _RecordingChannel(HTTPChannel):
    """Below HeadWithBodyChannel: records each send() to the client, and how many bytes were
    queued in the channel's out buffer (where the loop thread can see them) while it ran."""

    sends: list[tuple[bytes, int]] = []

    def send(self, data: bytes, do_close: bool = True) -> int:
        self.sends.append((bytes(data), self.total_outbufs_len))
        return int(super().send(data, do_close=do_close))


class _RecordedHeadWithBodyChannel(HeadWithBodyChannel, _RecordingChannel):
    pass


def test_an_answer_goes_out_with_its_head_in_one_send_from_the_request_thread(ollama_a: StandinServer) -> None:
    doc = gateway_config([{"name": "qwen3:4b", "engine": "ollama"}], ollama=[ollama_a.url])
    _RecordingChannel.sends = sends = []
    with LiveGateway(build(doc), channel_class=_RecordedHeadWithBodyChannel) as live:
        sends.clear()  # the harness's own readiness check
        reply = httpx.post(live.url + "/v1/chat/completions", json={"model": "qwen3:4b", "messages": USER})
        assert reply.status_code == 200 and reply.json()["choices"]
        assert len(sends) == 1
        (data, queued), = sends
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and json.loads(body) == reply.json()
        # Sent directly, never queued: queued bytes make waitress's loop thread spin until sent.
        assert queued == 0
        # Without a body after it, the head still goes out: HEAD, and a stream's first event.
        sends.clear()
        head_only = httpx.head(live.url + "/health", timeout=5)  # the app's 405 body is not sent to HEAD
        assert head_only.status_code == 405 and len(sends) == 1 and sends[0][0].endswith(b"\r\n\r\n")
        sends.clear()
        with httpx.stream("POST", live.url + "/v1/chat/completions",
                          json={"model": "qwen3:4b", "messages": USER, "stream": True}) as stream:
            lines = [line for line in stream.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]" and len(lines) > 2
        assert b"".join(data for data, _ in sends).count(b"data: ") == len(lines)
