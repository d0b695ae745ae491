"""In-process sentence-transformers baseline, run as its own process so it gets the same CPUs as
the gateway. Reads one batch size per line on stdin, encodes that many sentences once and answers
with the encode's own time as a JSON line."""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main() -> int:
    from sentence_transformers import SentenceTransformer

    from bench.embed_bench import sentences
    from gateway.embeddings_local import resolve_model_source

    model = SentenceTransformer(resolve_model_source("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    model.encode(sentences(8), show_progress_bar=False)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        texts = sentences(int(line))
        started = time.perf_counter()
        # The call the gateway makes for one request, so only the HTTP path differs.
        model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=False,
                     show_progress_bar=False)
        print(json.dumps({"seconds": time.perf_counter() - started}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
