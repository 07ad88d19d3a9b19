#!/usr/bin/env bash
# Training throughput of the paper's layers on a GPU machine (KERAS_BACKEND=jax, no TensorFlow there).
#
#   experiments/gpu/run_gpu_bench.sh OUT_DIR [bench_training_gpu.py options]   # e.g. OUT_DIR=$OUT there
#   experiments/gpu/run_gpu_bench.sh --download                               # = download_wheels.sh, here
#
# Keras, namex and optree travel as wheels in .whl/ (experiments/gpu/env.sh). Results:
# OUT_DIR/training_gpu.json, rewritten after each batch size. Size knobs: --steps (per epoch),
# --epochs, --settings; --smoke is a tiny run for any machine (PYTHON=a JAX venv for a dry run).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [[ ${1:-} == --download ]]; then
    exec "$root/experiments/gpu/download_wheels.sh"
fi
out=${1:?usage: $0 OUT_DIR [bench_training_gpu.py options]}
# shellcheck source=env.sh
source "$root/experiments/gpu/env.sh"
fer_gpu_env "$root"
mkdir -p "$out"
exec "$PYTHON" "$root/experiments/gpu/bench_training_gpu.py" --out "$out" "${@:2}"
