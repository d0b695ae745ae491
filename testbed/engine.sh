#!/usr/bin/env bash
# The Docker engine the test bed and the demo use, without changing the machine's own Docker setup.
#
#   testbed/engine.sh up        use the machine's running engine, or start the test bed's own
#   testbed/engine.sh down      stop the test bed's own engine (when it started one) and undo
#                               what `up` registered in the machine's engine
#   testbed/engine.sh release   `down`, unless test hosts or the demo box (label owner=molecule) still run
#   testbed/engine.sh status    which engine, socket and runtime the tools use
#   testbed/engine.sh exec CMD  run CMD with DOCKER_HOST and VILMS_TESTBED_RUNTIME set for it
#
# No engine running: the test bed starts its own dockerd with its own config file, socket, data
# root, exec root, pidfile and trust key (below; dockerd 20.10 writes /etc/docker/key.json unless
# told `deprecated-key-path`); /etc/docker is never read or written.
# An engine already running: it is used as it is. Privileged test hosts need the capability filter
# (testbed/runc-capfilter) only where the kernel's bounding set lacks capabilities (this kind of
# VM); then the wrapper is added to that engine as an extra runtime named `capfilter` (never its
# default; `runtimes` is reloaded on SIGHUP), the original config kept and put back by `down`.
# Test hosts ask for the runtime per container (molecule.yml: `runtime:`, community.docker's
# docker_container `runtime` option), so nothing else on the engine runs under the wrapper.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Both overridable, so a second test bed (or a test of this script) can run beside the first.
RUN_DIR=${VILMS_TESTBED_RUN:-/run/vilms-testbed}
DATA_DIR=${VILMS_TESTBED_DATA:-/var/lib/vilms-testbed}
OWN_SOCKET=unix://$RUN_DIR/docker.sock
OWN_CONFIG=$RUN_DIR/daemon.json
ENV_FILE=$RUN_DIR/env
WRAPPER=$REPO/testbed/runc-capfilter
MACHINE_CONFIG=/etc/docker/daemon.json
SAVED_CONFIG=$DATA_DIR/machine-daemon.json.orig
# Debian's docker CLI, which matches its daemon (a newer CLI may sit in /usr/local/bin); `exec`
# leaves the caller's PATH alone.
[[ ${1:-} == exec ]] || export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

say() { printf '[engine] %s\n' "$*"; }
answers() { DOCKER_HOST=$1 docker info >/dev/null 2>&1; }

# Every capability the kernel knows (cap_last_cap) in our bounding set? Then runc needs no help.
needs_capfilter() {
  local last mask
  last=$(cat /proc/sys/kernel/cap_last_cap)
  mask=$((16#$(awk '/^CapBnd:/ {print $2}' /proc/self/status)))
  ((mask != (1 << (last + 1)) - 1))
}

write_env() {
  mkdir -p "$RUN_DIR"
  printf 'DOCKER_HOST=%s\nVILMS_TESTBED_RUNTIME=%s\nVILMS_TESTBED_ENGINE=%s\n' "$1" "$2" "$3" >"$ENV_FILE"
}

machine_host() { echo "${DOCKER_HOST:-unix:///var/run/docker.sock}"; }

use_machine_engine() {
  local host runtime=runc
  host=$(machine_host)
  if DOCKER_HOST=$host docker info --format '{{json .Runtimes}}' | grep -q '"capfilter"'; then
    runtime=capfilter
  elif needs_capfilter; then
    [[ $host == unix:///var/run/docker.sock && -r /var/run/docker.pid ]] ||
      { echo "engine: $host needs the capfilter runtime; register $WRAPPER as 'capfilter' in its config" >&2
        exit 1; }
    mkdir -p "$DATA_DIR"
    if [[ -e $MACHINE_CONFIG ]]; then cp -p "$MACHINE_CONFIG" "$SAVED_CONFIG"; else echo absent >"$SAVED_CONFIG.absent"; fi
    local merged
    merged=$(jq --arg w "$WRAPPER" '.runtimes.capfilter = {path: $w}' "$MACHINE_CONFIG" 2>/dev/null ||
      jq -n --arg w "$WRAPPER" '{runtimes: {capfilter: {path: $w}}}')
    mkdir -p "$(dirname "$MACHINE_CONFIG")"
    printf '%s\n' "$merged" >"$MACHINE_CONFIG"
    kill -HUP "$(cat /var/run/docker.pid)"
    for _ in $(seq 1 20); do
      docker info --format '{{json .Runtimes}}' | grep -q '"capfilter"' && break
      sleep 0.5
    done
    say "added runtime 'capfilter' to $MACHINE_CONFIG (default runtime unchanged; \`make demo-down\` restores the file)"
    runtime=capfilter
  fi
  write_env "$host" "$runtime" machine
  say "using the machine's Docker engine at $host (runtime for test hosts: $runtime)"
}

start_own_engine() {
  mkdir -p "$RUN_DIR" "$DATA_DIR/docker"
  jq -n --arg sock "$OWN_SOCKET" --arg data "$DATA_DIR/docker" --arg exec "$RUN_DIR/exec" \
    --arg pid "$RUN_DIR/docker.pid" --arg w "$WRAPPER" \
    --arg key "$DATA_DIR/key.json" \
    '{hosts: [$sock], "data-root": $data, "exec-root": $exec, pidfile: $pid,
      runtimes: {capfilter: {path: $w}}, "deprecated-key-path": $key}' >"$OWN_CONFIG"
  # docker0 is left behind by any dockerd; note whether it was there so `down` can remove ours.
  [[ -e $RUN_DIR/docker0-existed || -e $RUN_DIR/docker0-ours ]] ||
    if ip link show docker0 >/dev/null 2>&1; then touch "$RUN_DIR/docker0-existed"; else touch "$RUN_DIR/docker0-ours"; fi
  say "starting the test bed's own dockerd (config $OWN_CONFIG, socket $OWN_SOCKET, log $DATA_DIR/dockerd.log)"
  setsid dockerd --config-file "$OWN_CONFIG" >>"$DATA_DIR/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    answers "$OWN_SOCKET" && break
    sleep 0.5
  done
  answers "$OWN_SOCKET" || { tail -20 "$DATA_DIR/dockerd.log" >&2; echo "engine: dockerd did not start" >&2; exit 1; }
  write_env "$OWN_SOCKET" capfilter own
}

up() {
  if answers "$OWN_SOCKET"; then
    write_env "$OWN_SOCKET" capfilter own
    say "the test bed's own dockerd is running ($OWN_SOCKET)"
  elif answers "$(machine_host)"; then
    use_machine_engine
  else
    command -v dockerd >/dev/null || { echo "engine: no dockerd (apt-get install docker.io)" >&2; exit 1; }
    start_own_engine
  fi
}

down() {
  if [[ -r $RUN_DIR/docker.pid ]] && answers "$OWN_SOCKET"; then
    local pid
    pid=$(cat "$RUN_DIR/docker.pid")
    say "stopping the test bed's own dockerd (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if [[ -e $RUN_DIR/docker0-ours ]] && ip link show docker0 >/dev/null 2>&1; then
      ip link delete docker0
    fi
  fi
  # dockerd leaves its default network namespace bind-mounted under the exec root.
  { findmnt -rn -o TARGET | grep "^$RUN_DIR/" || true; } | sort -r | xargs -r umount -l
  rm -rf "$RUN_DIR"
  [[ -e $SAVED_CONFIG || -e $SAVED_CONFIG.absent ]] || return 0
  # dockerd replaces its runtimes on SIGHUP only when the file names `runtimes` (a file without the
  # key, or no file, leaves `capfilter` registered until the engine restarts): reload once with the
  # original's runtimes (or none) spelt out, then put the original file back exactly.
  local original='{}'
  [[ -e $SAVED_CONFIG ]] && original=$(cat "$SAVED_CONFIG")
  if [[ -r /var/run/docker.pid ]]; then
    { jq '.runtimes = (.runtimes // {})' <<<"$original" || echo '{"runtimes": {}}'; } >"$MACHINE_CONFIG"
    kill -HUP "$(cat /var/run/docker.pid)"
    for _ in $(seq 1 20); do
      docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"capfilter"' || break
      sleep 0.5
    done
  fi
  if [[ -e $SAVED_CONFIG ]]; then
    cp -p "$SAVED_CONFIG" "$MACHINE_CONFIG" && rm -f "$SAVED_CONFIG"
  else
    rm -f "$MACHINE_CONFIG" "$SAVED_CONFIG.absent"
  fi
  say "restored the machine's $MACHINE_CONFIG and removed the runtime 'capfilter' from its engine"
}

release() {
  [[ -r $ENV_FILE ]] || return 0
  local running
  running=$(set -a; source "$ENV_FILE"; docker ps -q --filter label=owner=molecule 2>/dev/null || true)
  if [[ -n $running ]]; then
    say "test hosts or the demo box still run on the engine: it stays up"
  else
    down
  fi
}

case ${1:-} in
  up) up ;;
  down) down ;;
  release) release ;;
  status)
    if [[ -r $ENV_FILE ]]; then cat "$ENV_FILE"; else echo "no test bed engine in use"; fi ;;
  exec)
    shift
    [[ ${1:-} == -- ]] && shift
    if [[ -r $ENV_FILE ]]; then set -a; source "$ENV_FILE"; set +a; fi
    exec "$@" ;;
  *) echo "usage: $0 up|down|status|exec CMD..." >&2; exit 2 ;;
esac
