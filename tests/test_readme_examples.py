"""The README's examples, run as printed against `make serve`'s sample (testbed/serve_sample.py:
the gateway on the sample config, a stand-in Ollama, real local embeddings), so they cannot drift
from what the gateway answers. The blocks run are the ones after a `<!-- readme-example: LANG`
marker; GW and VILMS_KEY are set as the README tells the reader to set them."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.served_gateway import free_port, wait_until

REPO = Path(__file__).resolve().parents[1]
MARKED_BLOCK = re.compile(r"<!-- readme-example: (\w+)[^>]*-->\n```(\w+)\n(.*?)\n```", re.S)
pytestmark = pytest.mark.slow


def readme_blocks(lang: str) -> list[str]:
    blocks = [body for marker, fence, body in MARKED_BLOCK.findall((REPO / "README.md").read_text())
              if marker == lang == fence]
    assert blocks, f"README.md has no `<!-- readme-example: {lang}` block"
    return blocks


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`make serve` with no CONFIG, on a free port and its own key file."""
    tmp = tmp_path_factory.mktemp("readme")
    key = "readme-" + secrets.token_hex(8)
    (tmp / "api-key").write_text(key + "\n")
    port = free_port()
    log = (tmp / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "testbed/serve_sample.py", "--port", str(port)], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "VILMS_KEY_FILE": str(tmp / "api-key"), "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, (tmp / "serve.log").read_text()[-3000:]
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url + "/health/ready", timeout=1).status_code == 200
        return False

    try:
        assert wait_until(ready, 60), "make serve's sample did not become ready in 60 s"
        yield {**os.environ, "GW": url, "VILMS_KEY": key}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_readme_lists_the_models_the_examples_use() -> None:
    text = "\n".join(readme_blocks("bash") + readme_blocks("python"))
    for name in ("LLM", "VLM", "Embedding"):
        assert f'"model": "{name}"' in text or f'model="{name}"' in text


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's examples use curl, which is not installed")
def test_readme_curl_examples_answer_as_printed(sample: dict[str, str]) -> None:
    for block in readme_blocks("bash"):
        # Each command as printed; --fail-with-body turns an HTTP error into a failing command.
        script = "set -eo pipefail\ncurl() { command curl --fail-with-body \"$@\"; echo; }\n" + block
        run = subprocess.run(["bash", "-c", script], env=sample, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, f"a README example failed (exit {run.returncode}):\n{run.stdout[-3000:]}"
        out = run.stdout
        assert '"id": "LLM"' in out or '"id":"LLM"' in out  # /v1/models, /v1/models/LLM
        assert "data: [DONE]" in out  # the streamed chat
        assert "images: 1" in out  # the stand-in saw the picture
        embeddings = [json.loads(line) for line in out.splitlines() if '"object":"list"' in line.replace(" ", "")
                      and '"embedding"' in line]
        assert embeddings and len(embeddings[0]["data"]) == 2 and len(embeddings[0]["data"][0]["embedding"]) == 384
        assert "vilms_" in out and "# TYPE" in out  # /metrics with the key


def test_readme_python_example_runs_as_printed(sample: dict[str, str]) -> None:
    for block in readme_blocks("python"):
        run = subprocess.run([sys.executable, "-c", block], env=sample, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "qwen3:4b-instruct: Hi" in run.stdout  # the stand-in's answer, through the gateway
        assert "384 dimensions" in run.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's examples use curl, which is not installed")
def test_readme_examples_need_the_key(sample: dict[str, str]) -> None:
    """The examples pass because they send the key: the same calls with a wrong one are refused."""
    wrong = {**sample, "VILMS_KEY": "not-the-key"}
    block = readme_blocks("bash")[0].splitlines()[0]  # GET /v1/models
    run = subprocess.run(["bash", "-c", "curl() { command curl --fail-with-body \"$@\"; }\n" + block],
                         env=wrong, capture_output=True, text=True, timeout=60)
    assert run.returncode == 22, run.stdout
    assert "invalid_api_key" in run.stdout
