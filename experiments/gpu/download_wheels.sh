#!/usr/bin/env bash
# The wheels the GPU machine lacks (keras, namex, optree), at the versions requirements/test.lock pins,
# for its Python 3.12 on x86-64, into .whl/ (gitignored; name it in the device call's `carry`).
#
#   experiments/gpu/download_wheels.sh      # where pip reaches a registry
set -euo pipefail
cd "$(dirname "$0")/../.."
# Lock lines look like `keras==3.15.1 \` followed by hash lines: keep the pin, drop the continuation.
pins=$(grep -i -E '^(keras|namex|optree)==' requirements/test.lock | sed 's/[[:space:]]*\\$//')
[[ $(wc -w <<<"$pins") == 3 ]] || { echo "requirements/test.lock does not pin keras, namex and optree: $pins" >&2; exit 2; }
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl $pins
ls -l .whl
