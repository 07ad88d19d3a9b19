#!/usr/bin/env bash
# Build the fer-mtl images (what `make images` runs): component (CPU), predictor, GPU training.
#
#   images/build.sh [component|predictor|train-gpu ...]      (default: all three)
#
# Environment:
#   IMAGE_REGISTRY, IMAGE_TAG  names: $IMAGE_REGISTRY/fer-mtl-{cpu,predictor,gpu}:$IMAGE_TAG
#   DOCKER      the client; default: the first of `docker`, /usr/bin/docker that can build with BuildKit
#   BASE        the base image; default python:3.11.11-slim-bookworm when it can be pulled, else a base
#               built from Debian packages by images/build-base.sh (fer-mtl-base:bookworm-py3.11)
#   CA_BUNDLE   the CA bundle pip trusts inside the build (a BuildKit secret, never in a layer);
#               default: pip's own `cert` setting on this machine, when it names a file
#   BUILD_NETWORK  default host: the build's pip uses the host's network (daemons without a bridge)
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE_REGISTRY="${IMAGE_REGISTRY:-ghcr.io/fer-mtl}"
IMAGE_TAG="${IMAGE_TAG:-0.1.0}"
DEFAULT_BASE="python:3.11.11-slim-bookworm"
LOCAL_BASE="fer-mtl-base:bookworm-py3.11"
BUILD_NETWORK="${BUILD_NETWORK:-host}"

say() { echo "images/build.sh: $*" >&2; }

# A client builds when it has the buildx plugin, or is older than 23 (BuildKit built into `build`).
# A newer standalone client without buildx refuses BuildKit builds, so it is skipped.
can_build() {
    local client=$1 major
    command -v "$client" >/dev/null 2>&1 || return 1
    "$client" buildx version >/dev/null 2>&1 && return 0
    major=$("$client" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
    [ -n "$major" ] && [ "$major" -lt 23 ]
}

pick_client() {
    if [ -n "${DOCKER:-}" ]; then echo "$DOCKER"; return; fi
    for client in docker /usr/bin/docker; do
        if can_build "$client"; then echo "$client"; return; fi
    done
    say "no Docker client here builds with BuildKit (need the buildx plugin, or Debian's docker.io client: apt-get install -y docker.io)"
    exit 1
}

pick_base() {
    if [ -n "${BASE:-}" ]; then echo "$BASE"; return; fi
    if "$DOCKER" image inspect "$DEFAULT_BASE" >/dev/null 2>&1 \
        || timeout 60 "$DOCKER" pull -q "$DEFAULT_BASE" >/dev/null 2>&1; then
        echo "$DEFAULT_BASE"; return
    fi
    if ! "$DOCKER" image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
        say "$DEFAULT_BASE cannot be pulled; building $LOCAL_BASE from Debian packages (images/build-base.sh)"
        DOCKER="$DOCKER" images/build-base.sh "$LOCAL_BASE" >/dev/null
    fi
    echo "$LOCAL_BASE"
}

pick_ca_bundle() {
    local bundle="${CA_BUNDLE:-}"
    if [ -z "$bundle" ]; then
        bundle="${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}"
    fi
    if [ -n "$bundle" ] && [ -f "$bundle" ]; then echo "$bundle"; fi
}

DOCKER=$(pick_client)
if ! "$DOCKER" info >/dev/null 2>&1; then
    say "'$DOCKER info' failed: no Docker daemon here; start Docker (e.g. dockerd --bridge=none --iptables=false &) and retry"
    exit 1
fi
BASE=$(pick_base)
CA=$(pick_ca_bundle)
SECRET=()
if [ -n "$CA" ]; then SECRET=(--secret "id=ca_bundle,src=$CA"); fi

declare -A NAMES=([component]=fer-mtl-cpu [predictor]=fer-mtl-predictor [train-gpu]=fer-mtl-gpu)
ROLES=("$@")
if [ ${#ROLES[@]} -eq 0 ]; then ROLES=(component predictor train-gpu); fi
for role in "${ROLES[@]}"; do
    name="${NAMES[$role]:-}"
    if [ -z "$name" ]; then say "unknown image $role; expected one of: ${!NAMES[*]}"; exit 2; fi
    say "building $IMAGE_REGISTRY/$name:$IMAGE_TAG (base $BASE, client $DOCKER${CA:+, CA bundle $CA})"
    start=$SECONDS
    # nice: builds share the machine with whatever else runs (tests, training).
    DOCKER_BUILDKIT=1 nice -n 10 "$DOCKER" build --network "$BUILD_NETWORK" "${SECRET[@]}" \
        --build-arg "BASE=$BASE" --label "io.fer-mtl.base=$BASE" -f "images/$role/Dockerfile" -t "$IMAGE_REGISTRY/$name:$IMAGE_TAG" .
    say "built $IMAGE_REGISTRY/$name:$IMAGE_TAG in $((SECONDS - start)) s"
done
# Each rebuild leaves the image it replaced behind, untagged (~3 GB each, ~7 GB for the GPU one);
# remove those of ours only (dangling and carrying our source label), never anyone else's.
"$DOCKER" image prune -f --filter "label=org.opencontainers.image.source=https://github.com/fer-mtl/fer-mtl" >/dev/null
