#!/usr/bin/env bash
# ViLMS Edge demo on this machine: one CPU-profile box provisioned by the real site.yml.
#   testbed/demo.sh up      engine + images, the box (molecule scenario "demo"), its API key
#   testbed/demo.sh down    remove the box; stop the test bed's own Docker engine if it started one
#   testbed/demo.sh clean   down, then remove the images, caches and data root the demo made
# Called by `make demo` / `make demo-down` / `make demo-clean`. Needs root (it runs a Docker engine).
# The box is "vilms-demo" on network "vilms-demo", published on 127.0.0.1:8989; the tests use other
# names, networks and ports (molecule/*/molecule.yml), so `make test` can run while it is up.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$REPO/.venv
SCENARIO=demo
HOST=vilms-demo
KEY_FILE=$REPO/.demo/api-key
LOCAL_PORT=${VILMS_DEMO_PORT:-8989}
CACHE=${VILMS_TESTBED_CACHE:-/var/cache/vilms-testbed}
DATA_DIR=${VILMS_TESTBED_DATA:-/var/lib/vilms-testbed}
IMAGES=(vilms/testhost:bookworm local/debian:bookworm local/pybase:bookworm)
export PATH=$VENV/bin:$PATH
# Plain logs when not on a terminal (ansible, molecule, rich) and no dependency deprecation noise.
[[ -t 1 ]] || export ANSIBLE_NOCOLOR=1 NO_COLOR=1 ANSIBLE_FORCE_COLOR=0
# ansible-core imports cryptography's DSA, which warns on every start (see the Makefile).
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore:DSA is deprecated:UserWarning}

T0=$SECONDS
say() { printf '\n==> [%ss] %s\n' "$((SECONDS - T0))" "$*"; }
engine() { bash "$REPO/testbed/engine.sh" exec -- "$@"; }
# A step of minutes: its output as it comes, and a line after every 20 s of silence.
talk() { local name=$1; shift; python3 "$REPO/testbed/talk" "$name" -- "$@"; }
engine_answers() { engine docker info >/dev/null 2>&1; }

make_key() {
  [[ -s $KEY_FILE ]] && return
  mkdir -p "$(dirname "$KEY_FILE")"
  (umask 077 && python3 -c 'import secrets; print("vilms-demo-" + secrets.token_urlsafe(24))' >"$KEY_FILE")
}

up() {
  say "Setting up the test bed (Docker engine, base images)"
  talk setup-testbed bash "$REPO/.ci/setup-testbed.sh"
  [[ -x $VENV/bin/molecule ]] || make -C "$REPO" setup
  make_key
  say "Creating and provisioning $HOST (molecule converge -s $SCENARIO; about 2-3 minutes, one line per task)"
  cd "$REPO"
  talk demo-converge bash "$REPO/testbed/engine.sh" exec -- molecule converge -s "$SCENARIO"
  local key
  key=$(cat "$KEY_FILE")
  say "Checking it the way a client would"
  "$VENV/bin/python" "$REPO/testbed/verify_gateway.py" --url "http://127.0.0.1:$LOCAL_PORT/v1" \
    --api-key "$key" --model LLM --embedding-model Embedding
  cat <<EOF

ViLMS Edge demo is up ($((SECONDS - T0)) s): http://127.0.0.1:$LOCAL_PORT/v1
API key: $key   (in .demo/api-key)
Models: LLM (qwen3:4b-instruct), VLM, Embedding (all-MiniLM-L6-v2, local)
The chat models are answered by a stand-in Ollama (tests/standins); embeddings are real.

Every example in the README's "Endpoints" section works as printed after:
  export GW=http://127.0.0.1:$LOCAL_PORT VILMS_KEY=\$(cat .demo/api-key)
  curl -s \$GW/v1/models -H "Authorization: Bearer \$VILMS_KEY"

Inside the box: $REPO/testbed/engine.sh exec docker exec -it $HOST bash
                (systemctl status vilms-gateway, docker ps)
Tear down:      make demo-down      (make demo-clean also removes images and caches)
EOF
}

down() {
  cd "$REPO"
  if engine_answers; then
    if engine docker container inspect "$HOST" >/dev/null 2>&1; then
      say "Removing $HOST (molecule destroy -s $SCENARIO)"
      talk demo-destroy bash "$REPO/testbed/engine.sh" exec -- molecule destroy -s "$SCENARIO"
    fi
  fi
  # Test hosts still running on the engine (a `make test` in progress) keep it up.
  bash "$REPO/testbed/engine.sh" release
  say "Demo stopped"
}

clean() {
  local own=0
  [[ $(bash "$REPO/testbed/engine.sh" status) == *VILMS_TESTBED_ENGINE=own* ]] && own=1
  if ((own == 0)) && engine_answers; then
    say "Removing the test bed's images from the machine's Docker engine"
    engine docker image rm "${IMAGES[@]}" >/dev/null 2>&1 || true
  fi
  down
  if ((own)) && engine_answers; then
    echo "demo-clean: the test bed's engine still runs test hosts; run it again when they are gone" >&2
    exit 1
  fi
  # molecule keeps a scenario's state (and the demo's wheelhouse) in
  # ~/.ansible/tmp/molecule.<checksum of the project folder's name>.<scenario> (molecule/scenario.py).
  local state
  state=$("$VENV/bin/python" -c 'import sys; from molecule.text import checksum; print(checksum(sys.argv[1], 4))' \
    "$(basename "$REPO")" 2>/dev/null || true)
  say "Removing $DATA_DIR (own engine's data root), $CACHE, molecule's demo state and .demo/"
  rm -rf "$DATA_DIR" "$CACHE" "$REPO/.demo"
  [[ -z $state ]] || rm -rf "$HOME/.ansible/tmp/molecule.$state.$SCENARIO"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  clean) clean ;;
  *) echo "usage: $0 up|down|clean" >&2; exit 2 ;;
esac
