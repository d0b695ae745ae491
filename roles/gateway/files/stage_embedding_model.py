"""Stage an embedding model on the controller for boxes with no internet (playbooks/stage.yml).

Run with HF_HOME set to the controller's staging directory (gateway_embedding_stage_dir): the model is
downloaded into its hub cache, only the files sentence-transformers loads, and the gateway role copies
that snapshot into the box's cache (HF_HOME of the service, which runs with HF_HUB_OFFLINE=1).
Prints "staged <path>".
"""

from __future__ import annotations

import sys

# What SentenceTransformer(<dir>) reads: modules.json names the modules; the Transformer module reads
# sentence_bert_config.json, config.json, the weights and the tokenizer; Pooling, Dense and Normalize
# read <n>_<Module>/config.json (and Dense its weights). Safetensors weights only: the pytorch_model.bin,
# ONNX, OpenVINO, TensorFlow and Flax copies a hub repository also carries are never loaded.
MODEL_FILES = (
    "modules.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
    "config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "*_*/config.json",
)
# Weights in these folders are other runtimes' copies, matched by "*.safetensors" otherwise.
IGNORED = ("onnx/*", "openvino/*")


def main(model: str) -> int:
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(model, allow_patterns=list(MODEL_FILES), ignore_patterns=list(IGNORED))
    except Exception as exc:  # no network, unknown or gated model: say which and why
        print(f"cannot download embedding model {model!r}: {exc}", file=sys.stderr)
        return 1
    print(f"staged {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
