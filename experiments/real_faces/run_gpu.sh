#!/usr/bin/env bash
# The model to ship, trained on one GPU call with issue 13's recipe (KERAS_BACKEND=jax, no TensorFlow):
# teacher soft labels (`fer-mtl teach`), then the four-head student at paper width with balanced
# batches, distillation, cosine decay after a warm-up, BatchNorm recalibration and an epoch checkpoint.
#
#   experiments/real_faces/run_gpu.sh PACK OUT [recipe_run.py options]
#
# PACK: `fer_model.dataset_pack` pack of FER2013 + UTKFace (eye alignment on), or a dataset folder.
# OUT: on the GPU machine, $OUT. --budget-s (default 540) bounds the whole run; the student's epochs are
# sized to it unless --epochs is given. `--help` lists every option; experiments/gpu/README.md gives
# the device call and how its results come back (experiments/real_faces/finalize.py).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=../gpu/env.sh
source "$root/experiments/gpu/env.sh"
fer_gpu_env "$root"
exec "$PYTHON" "$root/experiments/gpu/recipe_run.py" "$@"
