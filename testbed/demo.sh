#!/usr/bin/env bash
# ViLMS Edge demo on this machine: one CPU-profile test host provisioned by the real site.yml.
#   testbed/demo.sh up     set up Docker + images, the venv, the host; print how to use it
#   testbed/demo.sh down   remove the host (the Docker engine and images stay)
# Called by `make demo` / `make demo-down`. Needs root (it runs a Docker engine).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$REPO/.venv
SCENARIO=cpu
HOST=vilms-$SCENARIO
API_KEY=testbed-cpu-key # molecule/cpu/hosts.yml
LOCAL_PORT=${VILMS_DEMO_PORT:-8989}
export PATH=$VENV/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

say() { printf '\n==> %s\n' "$*"; }

make_venv() {
  if [[ -x $VENV/bin/molecule && -x $VENV/bin/ansible-playbook ]] &&
    "$VENV/bin/python" -c 'import openai' 2>/dev/null; then
    return
  fi
  say "Creating $VENV (gateway with embeddings + dev tools)"
  [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip # --group needs pip >= 25.1
  # The CPU build of torch lies on this machine's disk; a plain requirement would pull CUDA.
  "$VENV/bin/pip" install -q 'torch==2.13.0' || true
  (cd "$REPO" && "$VENV/bin/pip" install -q -e '.[embeddings]' --group dev)
}

host_ip() {
  docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$HOST"
}

up() {
  local t0=$SECONDS
  say "Setting up the test bed (Docker engine, base images)"
  bash "$REPO/.ci/setup-testbed.sh"
  make_venv
  say "Creating and provisioning $HOST (molecule converge -s $SCENARIO)"
  cd "$REPO"
  # The cpu scenario publishes the gateway on a random loopback port unless told which.
  VILMS_TESTBED_PUBLISH="127.0.0.1:$LOCAL_PORT:8989" molecule converge -s "$SCENARIO"
  local ip
  ip=$(host_ip)
  say "Checking it the way a client would"
  "$VENV/bin/python" "$REPO/testbed/verify_gateway.py" --url "http://$ip:8989/v1" \
    --api-key "$API_KEY" --model LLM --embedding-model Embedding
  cat <<EOF

ViLMS Edge demo is up ($((SECONDS - t0)) s). Gateway:
  http://$ip:8989/v1         (the test host's address)
  http://127.0.0.1:$LOCAL_PORT/v1    (published on this machine's loopback)
API key: $API_KEY      Models: LLM (qwen3:4b-instruct), VLM, Embedding (all-MiniLM-L6-v2, local)
The chat models are answered by a stand-in Ollama (tests/standins); embeddings are real.

  curl -s http://127.0.0.1:$LOCAL_PORT/v1/models -H 'Authorization: Bearer $API_KEY'
  curl -s http://127.0.0.1:$LOCAL_PORT/v1/chat/completions -H 'Authorization: Bearer $API_KEY' \\
    -H 'Content-Type: application/json' \\
    -d '{"model": "LLM", "messages": [{"role": "user", "content": "Hello!"}]}'
  curl -s http://127.0.0.1:$LOCAL_PORT/v1/embeddings -H 'Authorization: Bearer $API_KEY' \\
    -H 'Content-Type: application/json' -d '{"model": "Embedding", "input": "edge AI"}'

  $VENV/bin/python - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="http://127.0.0.1:$LOCAL_PORT/v1", api_key="$API_KEY")
print([m.id for m in client.models.list().data])
reply = client.chat.completions.create(model="LLM", messages=[{"role": "user", "content": "Hello!"}])
print(reply.choices[0].message.content)
stream = client.chat.completions.create(
    model="LLM", stream=True, messages=[{"role": "user", "content": "Count to 5"}])
for chunk in stream:
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
print(len(client.embeddings.create(model="Embedding", input="edge AI").data[0].embedding), "dims")
PY

Inside the box: docker exec -it $HOST bash   (systemctl status vilms-gateway, docker ps)
Tear down:     testbed/demo.sh down
EOF
}

down() {
  cd "$REPO"
  if [[ -x $VENV/bin/molecule ]] && docker info >/dev/null 2>&1; then
    molecule destroy -s "$SCENARIO"
  fi
  say "Demo host removed (the Docker engine and the base images stay for the next run)"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
