#!/usr/bin/env bash
# Build a Python 3.11 base image from Debian packages, for machines (and air-gapped clusters) that
# cannot pull python:3.11.x-slim-bookworm from a registry but can reach a Debian mirror.
#
#   images/build-base.sh [IMAGE_NAME]        (default fer-mtl-base:bookworm-py3.11; needs root)
#
# The result is what the Dockerfiles need of their default base: `python` and `python3` on PATH
# (3.11, with venv), CA certificates, `useradd`. Pass it to a build as `--build-arg BASE=IMAGE_NAME`;
# `make images` does that by itself when the default base cannot be pulled.
# Environment: MIRROR (default: the first Debian mirror apt uses here), SUITE (default bookworm),
# DOCKER (default: docker).
set -euo pipefail

IMAGE="${1:-fer-mtl-base:bookworm-py3.11}"
SUITE="${SUITE:-bookworm}"
DOCKER="${DOCKER:-docker}"

mirror_from_apt() {
    # deb822 sources first (Debian 12's default), then the one-line format.
    local uri
    uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '{print $2}' | grep -v security | head -n1 || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}
MIRROR="${MIRROR:-$(mirror_from_apt)}"

if [ "$(id -u)" -ne 0 ]; then
    echo "build-base.sh: debootstrap needs root; rerun with sudo" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "build-base.sh: debootstrap missing: apt-get install -y debootstrap" >&2; exit 1; }

ROOTFS=$(mktemp -d /tmp/fer-mtl-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT

echo "build-base.sh: debootstrap $SUITE from $MIRROR into $ROOTFS" >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$ROOTFS" "$MIRROR" >&2
# The slim image's conventions: `python` is Python 3; no apt lists or caches in the layer.
ln -sf python3 "$ROOTFS/usr/bin/python"
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb

tar -C "$ROOTFS" -c . | "$DOCKER" import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    - "$IMAGE" >&2
echo "$IMAGE"
