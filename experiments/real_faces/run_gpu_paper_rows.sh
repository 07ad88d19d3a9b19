#!/usr/bin/env bash
# The paper's comparison on real faces (FER2013 + UTKFace), all runs in parallel on one GPU.
#
#   experiments/real_faces/run_gpu_paper_rows.sh ALIGNED.npz PLAIN.npz BEST_PARAMS.json OUT [TIME_LIMIT_S]
#
# The H200 rows of README.md's results table (the paper's recipe). The model to ship, with issue 13's
# recipe, comes from run_gpu.sh instead.
#
# ALIGNED.npz: dataset pack (fer_model.dataset_pack) of FER2013 + UTKFace, eye alignment on;
# PLAIN.npz: FER2013 alone, eye alignment off (the alignment on/off comparison);
# BEST_PARAMS.json: `fer-mtl tune` output, the tuned loss weights for multi_task_tuned.
# Every run trains for at most TIME_LIMIT_S seconds (best weights kept; epochs run are recorded):
#   paper/         single_task, multi_task, multi_task_tuned   (the paper's layers and losses)
#   alignment_off/ single_task on PLAIN                          (compare with paper/single_task)
#   improved/      multi_task with augmentation + label smoothing, width 1 and width 0.5
# Needs keras and the fer_model and fer_cli sources only (KERAS_BACKEND=jax).
set -euo pipefail
aligned_pack=$1 plain_pack=$2 best_params=$3 out=$4 limit=${5:-110}
root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=../gpu/env.sh
source "$root/experiments/gpu/env.sh"
fer_gpu_env "$root"
work=${WORK:-$(mktemp -d)}
mkdir -p "$out/logs"
fer() { "$PYTHON" -m fer_cli "$@"; }

"$PYTHON" -c "
from fer_model.dataset_pack import unpack_dataset
unpack_dataset('$aligned_pack', '$work/aligned')
unpack_dataset('$plain_pack', '$work/plain')"

# Batch 128 and lr 1e-3 (not the paper's 32 and 3e-4) so each run gets tens of epochs in the budget.
common=(--epochs "${EPOCHS:-100}" --batch-size 128 --lr 1e-3 --time-limit "$limit" --mixed-precision
        --machine "${MACHINE:-$(hostname)}")
improved=(--augment --label-smoothing 0.1)
pids=()
start() { local log=$1; shift; (set +e; "$@" >"$out/logs/$log.log" 2>&1; echo "exit $?" >>"$out/logs/$log.log") &
          pids+=($!); }
start single fer experiment run --dataset "$work/aligned" --out "$out/paper" --runs single_task "${common[@]}"
start multi fer experiment run --dataset "$work/aligned" --out "$out/paper" --runs multi_task "${common[@]}"
start tuned fer experiment run --dataset "$work/aligned" --out "$out/paper" --runs multi_task_tuned \
    --tuned "$best_params" "${common[@]}"
start align_off fer experiment run --dataset "$work/plain" --out "$out/alignment_off" --runs single_task "${common[@]}"
start improved fer experiment run --dataset "$work/aligned" --out "$out/improved" --runs multi_task \
    "${common[@]}" "${improved[@]}"
start improved_w05 fer experiment run --dataset "$work/aligned" --out "$out/improved_w0.5" --runs multi_task \
    "${common[@]}" "${improved[@]}" --width 0.5
wait "${pids[@]}" || true
for d in paper alignment_off improved improved_w0.5; do
    fer experiment table --out "$out/$d" >/dev/null 2>&1 || echo "no results in $out/$d"
done
tail -n 2 "$out"/logs/*.log
