#!/usr/bin/env bash
# Make this machine able to host ViLMS test hosts (see testbed/README.md).
#
# Idempotent, run as root on Debian 12; systemd need not be PID 1. It:
#   1. installs docker.io + debootstrap (skipped when present),
#   2. picks the engine (testbed/engine.sh): the machine's running dockerd, used
#      without changing its defaults, or the test bed's own dockerd (own config
#      file, socket, data root); /etc/docker/daemon.json is left alone,
#   3. builds the base images when absent, caching the debootstrap roots:
#        local/debian:bookworm   systemd + python3 root (test host base)
#        local/pybase:bookworm   minbase + python3 only (stand-in engines base,
#                                loaded into each test host's inner Docker)
#        vilms/testhost:bookworm the test host: systemd + docker.io + sudo
# Environment: VILMS_TESTBED_CACHE (default /var/cache/vilms-testbed),
#              VILMS_TESTBED_RUN / VILMS_TESTBED_DATA (testbed/engine.sh's run and data dirs),
#              VILMS_TESTBED_REBUILD=1 to rebuild the images.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${VILMS_TESTBED_CACHE:-/var/cache/vilms-testbed}
REBUILD=${VILMS_TESTBED_REBUILD:-0}
SUITE=bookworm
# Debian's docker CLI, which matches its daemon (a newer CLI may sit in /usr/local/bin).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

T0=$SECONDS
step() { printf '[setup-testbed %4ss] %s\n' "$((SECONDS - T0))" "$*"; }
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

[[ $(id -u) -eq 0 ]] || { echo "setup-testbed: run as root" >&2; exit 1; }
mkdir -p "$CACHE"

# --- 1. packages -----------------------------------------------------------
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v jq >/dev/null || need+=(jq)
if ((${#need[@]})); then
  step "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
step "packages ready"

# --- 2. the engine: the machine's, or the test bed's own (testbed/engine.sh) -----
bash "$REPO/testbed/engine.sh" up
set -a
# shellcheck source=/dev/null
source "${VILMS_TESTBED_RUN:-/run/vilms-testbed}/env"
set +a
step "dockerd ready ($(docker info --format '{{.Driver}}') storage, test hosts run under $VILMS_TESTBED_RUNTIME)"

# --- 3. base images ------------------------------------------------------------
# debootstrap a root once into a cached tarball; import it when the image is missing.
make_base() {
  local image=$1 tarball=$2 include=$3 cmd=$4
  if [[ $REBUILD == 1 ]] && image_exists "$image"; then docker rmi -f "$image" >/dev/null; fi
  image_exists "$image" && { step "$image present"; return; }
  if [[ ! -s $tarball ]]; then
    local root
    root=$(mktemp -d "$CACHE/root.XXXXXX")
    step "debootstrap $SUITE into $root (include: $include)"
    mkdir -p "$CACHE/debs"
    debootstrap --variant=minbase --cache-dir="$CACHE/debs" --include="$include" \
      "$SUITE" "$root" >"$CACHE/debootstrap.log" 2>&1 ||
      { tail -20 "$CACHE/debootstrap.log" >&2; rm -rf "$root"; exit 1; }
    # Shrink what every container copy carries; no man pages or apt lists needed.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
      "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
    tar -C "$root" -c . >"$tarball.tmp" && mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  fi
  step "docker import $image"
  docker import -c "CMD $cmd" "$tarball" "$image" >/dev/null
}

make_base local/debian:$SUITE "$CACHE/debian-$SUITE-systemd.tar" \
  systemd,systemd-sysv,dbus,python3,python3-venv,iproute2,curl,ca-certificates \
  '["/lib/systemd/systemd"]'
make_base local/pybase:$SUITE "$CACHE/debian-$SUITE-python.tar" \
  python3,ca-certificates '["/usr/bin/python3"]'

# The test host image is rebuilt when its inputs change (label = their hash).
testhost_hash=$(cat "$REPO/testbed/Dockerfile.testhost" "$REPO/testbed/runc-capfilter" \
  "$REPO"/testbed/testhost/* | sha256sum | cut -c1-16)
current_hash=$(docker image inspect -f '{{index .Config.Labels "vilms.testbed.hash"}}' \
  vilms/testhost:$SUITE 2>/dev/null || true)
if [[ $REBUILD == 1 || $current_hash != "$testhost_hash" ]]; then
  step "docker build vilms/testhost:$SUITE"
  docker build --network host -q -t vilms/testhost:$SUITE \
    --label vilms.testbed.hash="$testhost_hash" \
    -f "$REPO/testbed/Dockerfile.testhost" "$REPO/testbed" >/dev/null
else
  step "vilms/testhost:$SUITE up to date"
fi
step "done"
