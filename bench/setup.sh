#!/usr/bin/env bash
# Installs what `python -m bench.run` needs beside the project venv: nginx + wrk from Debian, the
# pinned LiteLLM peer in its own venv (bench/.venv-litellm), py-spy for profiling (bench/.venv-tools).
set -euo pipefail
cd "$(dirname "$0")"
LITELLM_VERSION=1.81.13  # before the compromised PyPI releases 1.82.7/1.82.8 and 1.107.0
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk
fi
if [ ! -x .venv-litellm/bin/litellm ]; then
    python3 -m venv .venv-litellm
    .venv-litellm/bin/pip install -q "litellm[proxy]==${LITELLM_VERSION}"
fi
if [ ! -x .venv-tools/bin/py-spy ]; then
    python3 -m venv .venv-tools
    .venv-tools/bin/pip install -q py-spy
fi
echo "bench setup done: run .venv/bin/python -m bench.run [--quick] from the repository root"
