#!/usr/bin/env bash
# The from-scratch paper-width run on CPU, continued across sessions (README.md: "From scratch at
# paper width, on CPU, across sessions"). Each step runs only if its output is not there yet:
# prepare the shared data, teach, then train, resuming from the epoch checkpoint when there is one.
#
#   experiments/real_faces/cpu_scratch.sh            # run or continue; stop it any time (kill)
#   experiments/real_faces/cpu_scratch.sh --record   # write results/cpu_scratch/ from what ran so far
#
# RUNS (default ~/fer-mtl-runs/cpu_scratch) must lie outside the work tree: each session lays the
# work tree anew, and the first start's checkpoint was lost with it. DATA: the shared data folder.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
runs=${RUNS:-$HOME/fer-mtl-runs/cpu_scratch}
data=${DATA:-$root/../shared/data}
fer="$root/.venv/bin/fer-mtl"
python="$root/.venv/bin/python"
[ -x "$fer" ] || { echo "cpu_scratch.sh: $fer is missing: run 'make install' first" >&2; exit 1; }
mkdir -p "$runs"
cd "$runs"

# --resume starts afresh when there is no checkpoint yet, and does nothing once the run has finished.
train=(train --dataset taught --out student --width 1.0 --epochs 20 --batch-size 128
    --lr 1e-3 --seed 0 --schedule cosine --warmup-epochs 2 --early-stopping-patience 20
    --distill-weight 1.0 --distill-temperature 1.0 --augment --dropout 0.3,0.3,0.3,0.4
    --loss-weights emotion=8,gender=8.45,race=1.0,age=1.96 --resume)

if [ "${1:-}" = "--record" ]; then
    exec "$python" "$root/experiments/real_faces/record_run.py" student train.log \
        "$root/experiments/real_faces/results/cpu_scratch" --code-commit "$(git -C "$root" rev-parse --short HEAD)" \
        --command "fer-mtl ${train[*]}"
fi

teacher="$root/fer_model/pretrained"
[ -f real_aligned/manifest.json ] ||
    "$fer" prepare --source "fer2013-folder:$data/fer2013" --source "utkface:$data/utkface" \
        --split-mode holdout --workers 2 --out real_aligned 2>&1 | tee -a prepare.log
[ -f taught/manifest.json ] ||
    "$fer" teach --dataset real_aligned --out taught --threshold 0.5 --temperature 1.0 --flip-average \
        --teacher "emotion=$teacher" --teacher "gender=$teacher" --teacher "race=$teacher" \
        --teacher "age=$teacher" 2>&1 | tee -a teach.log
"$fer" "${train[@]}" 2>&1 | tee -a train.log
