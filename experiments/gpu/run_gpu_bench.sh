#!/usr/bin/env bash
# Training throughput of the paper's layers on a GPU machine (KERAS_BACKEND=jax), and the wheels it needs.
#
#   experiments/gpu/run_gpu_bench.sh --download   # here (pip works): keras, namex, optree wheels into .whl/
#   experiments/gpu/run_gpu_bench.sh [OUT_DIR]    # there (no network, no TensorFlow, JAX installed)
#
# The GPU machine has JAX but neither TensorFlow nor Keras, and reaches no registry: the wheels travel in
# .whl/ (gitignored) and install from there with --no-index into a private folder. The lock pins their
# versions; the machine's Python is 3.12. Results: OUT_DIR/training_gpu.json (default: ./gpu-results).
set -euo pipefail
cd "$(dirname "$0")/../.."
wheels=.whl
if [[ ${1:-} == --download ]]; then
    pins=$(grep -i -E '^(keras|namex|optree)==' requirements.lock)
    # shellcheck disable=SC2086
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$wheels" $pins
    ls "$wheels"
    exit 0
fi
out=${1:-gpu-results}
mkdir -p "$out"
if ! python3 -c 'import keras' 2>/dev/null; then
    ls "$wheels"/keras-*.whl >/dev/null 2>&1 || { echo "no keras wheel in $wheels: run $0 --download where pip works" >&2; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/keras-site \
        "$wheels"/*.whl
    export PYTHONPATH=/tmp/keras-site${PYTHONPATH:+:$PYTHONPATH}
fi
export KERAS_BACKEND=${KERAS_BACKEND:-jax} XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
python3 experiments/gpu/bench_training_gpu.py --out "$out" "${@:2}"
