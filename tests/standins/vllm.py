"""vLLM stand-in: vLLM's OpenAI server for ONE model (one process per model, as on a dGPU box).

python3 -m tests.standins.vllm --model Qwen/Qwen3-4B --served-model-name qwen3 --port 8000
python3 /opt/standin/vllm.py serve Qwen/Qwen3-4B --gpu-memory-utilization 0.8   # unknown flags ignored
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Any

if not __package__:
    # Run as a plain script (python3 /opt/standin/vllm.py): import its folder as a package so the
    # relative imports below work without the repository around it.
    _here = Path(__file__).resolve().parent
    sys.path.insert(0, str(_here.parent))
    __package__ = _here.name
    importlib.import_module(__package__)

from . import openai_shapes as oa
from .common import Settings, count_tokens, fake_embedding, reply_text, report_env
from .httpbase import App, Handler, serve_until_signal

VERSION = "0.11.0"
ENV_PREFIXES = ("VLLM_", "HF_", "NVIDIA_", "CUDA_", "JETSON_")


# vLLM's API server runs uvicorn with ``timeout_keep_alive=envs.VLLM_HTTP_TIMEOUT_KEEP_ALIVE``
# (vllm/entrypoints/openai/api_server.py), 5 s unless that variable says otherwise (vllm/envs.py;
# uvicorn's own default is 5 too): a connection idle that long after an answer is closed.
KEEP_ALIVE_SECONDS = 5.0


class VllmApp(App):
    kind = "vllm"
    server_header = "uvicorn"
    json_type = "application/json"

    def __init__(
        self,
        model: str = "facebook/opt-125m",
        served_model_names: list[str] | None = None,
        name: str = "vllm",
        settings: Settings | None = None,
        max_model_len: int = 4096,
        api_key: str | None = None,
        env: dict[str, str] | None = None,
        keep_alive_seconds: float = KEEP_ALIVE_SECONDS,
        keys: dict[str, str] | None = None,
        prefix: str = "",
    ) -> None:
        super().__init__(name, settings or Settings(embedding_dim=1024), env, keep_alive_seconds)
        # A cloud service's keys: key -> "ok", "revoked" (401), "limited" (429 with Retry-After), or
        # "quoted" (a 400 whose message quotes the key: no service is known to, a gateway must not relay it).
        self.keys = keys
        # Where the API lives instead of /v1 (e.g. "/v1beta/openai", as Gemini's OpenAI layer has it).
        self.prefix = prefix
        self.model = model
        self.served = list(served_model_names or [model])
        self.max_model_len = max_model_len
        self.api_key = api_key
        self.started = int(time.time())

    def info(self) -> dict[str, Any]:
        return {**super().info(), "models": list(self.served), "root": self.model}

    def send_error(self, h: Handler, status: int, message: str, path: str) -> None:
        kinds = {
            400: "BadRequestError",
            404: "NotFoundError",
            429: "TooManyRequestsError",
            500: "InternalServerError",
        }
        body = {
            "object": "error",
            "message": message,
            "type": kinds.get(status, "InternalServerError"),
            "param": None,
            "code": status,
        }
        h.send_json(status, body)

    def _key_refused(self, h: Handler) -> bool:
        """OpenAI's answers to a bad or rate-limited key. Its 401 quotes the key: masked in the
        middle when long, whole when short ("Incorrect API key provided: kk." in
        continuedev/continue#9358); this one always quotes it whole, the worse case."""
        assert self.keys is not None
        scheme, _, token = h.headers.get("Authorization", "").partition(" ")
        state = self.keys.get(token) if scheme == "Bearer" else None
        if state == "ok":
            return False
        if state == "quoted":
            self.send_error(h, 400, f"This request, made with key {token}, is not valid.", "")
            return True
        if state == "limited":
            h.send_json(429, {"error": {"message": "Rate limit reached for requests", "type": "requests",
                                        "param": None, "code": "rate_limit_exceeded"}}, {"Retry-After": "30"})
            return True
        h.send_json(401, {"error": {
            "message": f"Incorrect API key provided: {token}. You can find your API key at "
                       "https://platform.openai.com/account/api-keys.",
            "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})
        return True

    def route(self, h: Handler, method: str, path: str, body: Any) -> None:
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                h.send_json(404, {"detail": "Not Found"})
                return
            path = "/v1" + path[len(self.prefix):]
        if self.keys is not None and path.startswith("/v1/") and self._key_refused(h):
            return
        handler = ROUTES.get(path)
        if handler is None:
            h.send_json(404, {"detail": "Not Found"})
            return
        allowed, fn = handler
        if method not in allowed and not (method == "HEAD" and "GET" in allowed):
            h.send_json(405, {"detail": "Method Not Allowed"})
            return
        authorized = h.headers.get("Authorization", "") == f"Bearer {self.api_key}"
        if path.startswith("/v1/") and self.api_key and not authorized:
            h.send_json(401, {"error": "Unauthorized"})
            return
        if method == "POST" and (h.body_error or not isinstance(body, dict)):
            self.send_error(h, 400, h.body_error or "Expected a JSON object as the request body", path)
            return
        fn(self, h, body if isinstance(body, dict) else {}, path)

    def _model_ok(self, h: Handler, body: dict[str, Any], path: str) -> str | None:
        """The served name to answer as; vLLM treats a missing `model` as its default model."""
        requested = body.get("model")
        if requested is None:
            return self.served[0]
        if requested not in self.served:
            self.send_error(h, 404, f"The model `{requested}` does not exist.", path)
            return None
        return str(requested)

    def _check_length(self, h: Handler, body: dict[str, Any], prompt_tokens: int, path: str) -> bool:
        wanted = body.get("max_completion_tokens") or body.get("max_tokens") or 0
        if isinstance(wanted, int) and wanted + prompt_tokens > self.max_model_len:
            self.send_error(
                h,
                400,
                (
                    f"'max_tokens' or 'max_completion_tokens' is too large: {wanted}. "
                    f"This model's maximum context length is {self.max_model_len} tokens and your "
                    f"request has {prompt_tokens} input tokens "
                    f"({wanted} > {self.max_model_len} - {prompt_tokens})."
                ),
                path,
            )
            return False
        return True

    # -- endpoints -------------------------------------------------------------------------

    def health(self, h: Handler, body: dict[str, Any], path: str) -> None:
        h.send_bytes(200, b"", None)

    def version(self, h: Handler, body: dict[str, Any], path: str) -> None:
        h.send_json(200, {"version": VERSION})

    def metrics(self, h: Handler, body: dict[str, Any], path: str) -> None:
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f'vllm:num_requests_running{{engine="0",model_name="{self.served[0]}"}} 0.0',
        ]
        h.send_text(200, "\n".join(lines) + "\n", "text/plain; version=0.0.4; charset=utf-8")

    def models(self, h: Handler, body: dict[str, Any], path: str) -> None:
        data = [
            {
                "id": served,
                "object": "model",
                "created": self.started,
                "owned_by": "vllm",
                "root": self.model,
                "parent": None,
                "max_model_len": self.max_model_len,
                "permission": [
                    {
                        "id": f"modelperm-{zlib.crc32(served.encode()):08x}",
                        "object": "model_permission",
                        "created": self.started,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }
            for served in self.served
        ]
        h.send_json(200, {"object": "list", "data": data})

    def chat(self, h: Handler, body: dict[str, Any], path: str) -> None:
        model = self._model_ok(h, body, path)
        if model is None:
            return
        try:
            prompt = oa.parse_chat(body.get("messages"), "vllm")
        except oa.RequestError as exc:
            self.send_error(h, 400, str(exc), path)
            return
        if self._check_length(h, body, prompt.prompt_tokens, path):
            text = reply_text(self.name, model, prompt.user_text, prompt.images)
            oa.write_chat(h, "vllm", model, text, prompt, body)

    def completions(self, h: Handler, body: dict[str, Any], path: str) -> None:
        model = self._model_ok(h, body, path)
        if model is None:
            return
        prompt = body.get("prompt")
        prompt_text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt or []))
        tokens = count_tokens(prompt_text)
        if self._check_length(h, body, tokens, path):
            oa.write_completion(h, "vllm", model, reply_text(self.name, model, prompt_text, 0), tokens, body)

    def embeddings(self, h: Handler, body: dict[str, Any], path: str) -> None:
        model = self._model_ok(h, body, path)
        if model is None:
            return
        try:
            texts = oa.embedding_inputs(body.get("input"))
        except oa.RequestError as exc:
            self.send_error(h, 400, str(exc), path)
            return
        dims = body.get("dimensions")
        dim = dims if isinstance(dims, int) and dims > 0 else self.settings.embedding_dim
        vectors = [fake_embedding(t, dim) for t in texts]
        tokens = sum(count_tokens(t) for t in texts)
        h.send_json(
            200,
            oa.embedding_list("vllm", model, vectors, str(body.get("encoding_format") or "float"), tokens),
        )


ROUTES = {
    "/health": (("GET",), VllmApp.health),
    "/version": (("GET",), VllmApp.version),
    "/metrics": (("GET",), VllmApp.metrics),
    "/v1/models": (("GET",), VllmApp.models),
    "/v1/chat/completions": (("POST",), VllmApp.chat),
    "/v1/completions": (("POST",), VllmApp.completions),
    "/v1/embeddings": (("POST",), VllmApp.embeddings),
}


# ------------------------------------------------------------------------------- CLI

KNOWN_FLAGS = {
    "--model",
    "--served-model-name",
    "--host",
    "--port",
    "--max-model-len",
    "--api-key",
    "--name",
    "--chunks",
    "--chunk-delay",
    "--embedding-dim",
    "--quiet",
    "--help",
    "-h",
    "--version",
}
BOOLEAN_FLAGS = {
    "--quiet",
    "--help",
    "-h",
    "--version",
    "--trust-remote-code",
    "--enforce-eager",
    "--disable-log-requests",
    "--disable-log-stats",
    "--enable-lora",
    "--disable-frontend-multiprocessing",
    "--headless",
    "--use-v2-block-manager",
}


def split_args(argv: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(positionals, known flags with values, ignored flags).

    vLLM's many engine flags (--gpu-memory-utilization 0.9, --enforce-eager...) are accepted and dropped.
    """
    positionals: list[str] = []
    known: list[str] = []
    ignored: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        flag = token.split("=", 1)[0]
        if not token.startswith("-"):
            positionals.append(token)
            i += 1
            continue
        takes_value = (
            "=" not in token and flag not in BOOLEAN_FLAGS and not flag.startswith(("--enable-", "--disable-", "--no-"))
        )
        n = 1
        if takes_value:
            n += 1 if i + 1 < len(argv) and not argv[i + 1].startswith("--") else 0
            if flag == "--served-model-name":  # nargs="+"
                while i + n < len(argv) and not argv[i + n].startswith("-"):
                    n += 1
        (known if flag in KNOWN_FLAGS else ignored).extend(argv[i : i + n])
        i += n
    return positionals, known, ignored


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vllm", description="vLLM stand-in (OpenAI server for one model)")
    p.add_argument("--model", default=None)
    p.add_argument("--served-model-name", nargs="+", default=None)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY"))
    p.add_argument("--name", default=os.environ.get("STANDIN_NAME", "vllm"), help="server name shown in replies")
    p.add_argument("--chunks", type=int, default=5)
    p.add_argument("--chunk-delay", type=float, default=float(os.environ.get("STANDIN_CHUNK_DELAY", "0.05")))
    p.add_argument("--embedding-dim", type=int, default=1024)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--version", action="version", version=VERSION)
    return p


def main(argv: list[str] | None = None) -> int:
    positionals, known, ignored = split_args(list(sys.argv[1:] if argv is None else argv))
    while positionals[:1] in (["vllm"], ["serve"]):  # `vllm serve` in the command, the entrypoint or both
        positionals = positionals[1:]
    args = build_parser().parse_args(known)
    model = args.model or (positionals[0] if positionals else "facebook/opt-125m")
    if ignored:
        sys.stderr.write(f"vllm stand-in: ignoring engine flags {' '.join(ignored)}\n")
    app = VllmApp(
        model=model,
        served_model_names=args.served_model_name,
        name=args.name,
        settings=Settings(chunks=args.chunks, chunk_delay=args.chunk_delay, embedding_dim=args.embedding_dim),
        max_model_len=args.max_model_len,
        api_key=args.api_key,
        env=report_env(os.environ, ENV_PREFIXES),
        keep_alive_seconds=float(os.environ.get("VLLM_HTTP_TIMEOUT_KEEP_ALIVE") or KEEP_ALIVE_SECONDS),
    )
    serve_until_signal(app, args.host, args.port, verbose=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
