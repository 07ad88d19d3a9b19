"""The long real-faces run on a CPU: resumable, sized to a wall-clock budget, evaluated at the end.

    python experiments/real_faces/run_long.py --dataset DATASET --out OUT [--budget-hours H]
        [--epochs N|auto] [--init-weights fer_model/pretrained/model.keras] [--name multi_task_long]

Re-running the same command continues the run from its last epoch checkpoint (a killed or
time-limited run loses at most one epoch); once finished, it only re-writes the results.

The recipe (issue 13): four heads at width 0.5 with the tuned loss weights, batch 128, Adam 1e-3
with one warm-up epoch then cosine decay to ~0 at the last epoch, balanced batches (every step
half FER2013 emotion faces, half UTKFace faces, as many steps as single-task emotion training),
flip/shift/rotation/zoom augmentation, early stopping off (the best epoch is still restored).
`--epochs auto` sizes the run to the budget from a timed probe of a few training steps and keeps
that figure in OUT/NAME/plan.json, so a resumed run keeps the same schedule.

Leaves OUT/NAME/{checkpoint/, model/, evaluation/, evaluation_flip/, result.json} and OUT/results.md
(as `fer-mtl experiment run` and `fer-mtl experiment table` do); result.json also holds the test
scores with test-time flip averaging (`*_accuracy_flip`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

logger = logging.getLogger("run_long")

TUNED_LOSS_WEIGHTS = {"emotion": 3.48, "gender": 8.45, "race": 0.26, "age": 1.96}
#: Share of the budget given to training epochs; the rest covers validation, evaluation, saving.
_BUDGET_SHARE = 0.9
_PROBE_STEPS = 12


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, type=Path, help="dataset artifact (FER2013 + UTKFace, aligned)")
    parser.add_argument("--out", required=True, type=Path, help="experiment folder (results.md goes here)")
    parser.add_argument("--name", default="multi_task_long", help="run folder under --out (default: %(default)s)")
    parser.add_argument("--budget-hours", type=float, default=8.0, help="wall-clock budget of the whole run")
    parser.add_argument("--epochs", default="auto", help="epochs of the schedule, or 'auto' to fit the budget")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--init-weights", default=None, help=".keras model or model artifact to start from")
    parser.add_argument("--limit", type=int, default=None, help="use only this many faces per split (smoke test)")
    parser.add_argument("--machine", default=None, help="machine label for the results table")
    return parser.parse_args()


def _configs(args: argparse.Namespace, epochs: int) -> tuple[Any, Any]:
    from fer_model.model import ModelConfig
    from fer_model.training import TrainConfig

    model_config = ModelConfig(width=args.width, augment=True)
    train_config = TrainConfig(
        epochs=epochs, batch_size=args.batch_size, learning_rate=args.lr, loss_weights=TUNED_LOSS_WEIGHTS,
        schedule="cosine", warmup_epochs=min(args.warmup_epochs, epochs - 1), balanced_batches=True,
        early_stopping_patience=epochs, verbose=2,
    )
    return model_config, train_config


def _dataset(args: argparse.Namespace) -> Any:
    import numpy as np

    from fer_model.dataset import Dataset, load_dataset
    from fer_model.experiment import labelled_view
    from fer_model.tasks import TASK_NAMES

    dataset = load_dataset(args.dataset)
    view = labelled_view(dataset, TASK_NAMES)
    if args.limit is None:
        return dataset, view
    # A seeded sample, not the first faces: sources are stored in blocks, and a smoke run needs them all.
    rng = np.random.default_rng(0)
    keep = np.sort(np.concatenate([rng.permutation(view.indices(s))[:args.limit]
                                   for s in ("train", "validation", "test")]))
    labels = {t: np.asarray(a[keep]) for t, a in view.labels.items()}
    small = Dataset(images=np.asarray(view.images[keep]), labels=labels,
                    split=np.asarray(view.split[keep]), manifest=view.manifest, path=view.path)
    return dataset, small


def _plan_epochs(args: argparse.Namespace, run_dir: Path, view: Any) -> int:
    """Epochs of the schedule: given, or kept from plan.json, or sized to the budget by a timed probe."""
    plan = run_dir / "plan.json"
    if plan.exists():
        return int(json.loads(plan.read_text())["epochs"])
    if args.epochs != "auto":
        epochs = int(args.epochs)
    else:
        epoch_s = _probe_epoch_seconds(args, view)
        epochs = max(2, math.floor(_BUDGET_SHARE * args.budget_hours * 3600 / epoch_s))
        logger.info("probe: %.0f s per epoch -> %d epochs in %.1f h", epoch_s, epochs, args.budget_hours)
    run_dir.mkdir(parents=True, exist_ok=True)
    plan.write_text(json.dumps({"epochs": epochs, "budget_hours": args.budget_hours}) + "\n")
    return epochs


def _probe_epoch_seconds(args: argparse.Namespace, view: Any) -> float:
    """Seconds per epoch (training steps and validation), from timing a few steps of the real model."""
    import numpy as np

    from fer_model.batching import PlannedBatches, plan_batches
    from fer_model.model import build_model
    from fer_model.tasks import MISSING, TASK_NAMES
    from fer_model.training import compile_model

    model_config, train_config = _configs(args, epochs=2)
    images, labels = view.subset("train")
    plan = plan_batches({t: labels[t] for t in TASK_NAMES}, tasks=TASK_NAMES, monitor_task="emotion",
                        batch_size=args.batch_size, seed=0, balanced=True)
    batches = PlannedBatches(images[..., np.newaxis], {t: labels[t].astype(np.int32) for t in TASK_NAMES}, plan)
    model = build_model(model_config)
    compile_model(model, model_config=model_config, train_config=train_config, class_weights=None)
    x, y = batches[0]
    model.train_on_batch(x, y)  # tracing, not timed
    started = time.monotonic()
    for step in range(1, _PROBE_STEPS + 1):
        x, y = batches[step]
        model.train_on_batch(x, y)
    step_s = (time.monotonic() - started) / _PROBE_STEPS
    n_val = int(view.indices("validation").size)
    # Validation runs forward only (~1/3 of a training step per face).
    val_s = step_s / 3 * n_val / args.batch_size
    logger.info("probe: %.2f s per training step, %d steps per epoch, %d emotion faces", step_s,
                plan.steps_per_epoch, int(np.sum(labels["emotion"] != MISSING)))
    return step_s * plan.steps_per_epoch + val_s


def _budget_callback(run_dir: Path, budget_s: float) -> Any:
    import keras

    class Budget(keras.callbacks.Callback):
        """Adds each epoch's wall time to run_dir/elapsed.json; stops (resumable) once the budget is spent."""

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.started = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            path = run_dir / "elapsed.json"
            spent = json.loads(path.read_text())["seconds"] if path.exists() else 0.0
            spent += time.monotonic() - self.started
            path.write_text(json.dumps({"seconds": spent, "epochs": epoch + 1}) + "\n")
            if spent > budget_s:
                logger.warning("budget of %.0f s spent after epoch %d; re-run to continue", budget_s, epoch + 1)
                self.model.stop_training = True

    return Budget()


def _result_row(args: argparse.Namespace, *, name: str, model_config: Any, train_config: Any, result: Any,
                dataset: Any, metrics: dict[str, Any], flipped: dict[str, Any], seconds: float) -> dict[str, Any]:
    import keras

    row: dict[str, Any] = {
        "run": name,
        "description": "four heads, tuned weights, balanced batches, cosine schedule, augmentation"
                       + (f", warm start from {args.init_weights}" if args.init_weights else ""),
        "tasks": list(model_config.tasks),
        "loss_weights": train_config.weights_for(model_config.tasks),
        "model": asdict(model_config),
        "training": {k: v for k, v in asdict(train_config).items() if k != "loss_weights"},
        "epochs_run": len(result.history["loss"]),
        "best_epoch": result.best_epoch + 1,
        "train_seconds": round(seconds, 1),
        "val_emotion_accuracy": result.history["val_emotion_accuracy"][result.best_epoch],
        "environment": {"backend": keras.backend.backend(), "machine": args.machine or platform.node(),
                        "cpu_count": str(os.cpu_count()), "device": "cpu"},
        "dataset_manifest_sha256": dataset.manifest_sha256,
        "test_counts": {t: m["n_labelled"] for t, m in metrics["tasks"].items()},
    }
    for task, m in metrics["tasks"].items():
        row[f"{task}_accuracy"] = m["accuracy"]
        row[f"{task}_macro_f1"] = m["macro_f1"]
        row[f"{task}_accuracy_flip"] = flipped["tasks"][task]["accuracy"]
    return row


def main() -> int:
    args = _parse()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_dir = args.out / args.name
    dataset, view = _dataset(args)
    epochs = _plan_epochs(args, run_dir, view)
    model_config, train_config = _configs(args, epochs)

    from fer_model.evaluation import evaluate
    from fer_model.experiment import RESULT_FILE, write_results_table
    from fer_model.train_run import save_fit
    from fer_model.training import fit

    started = time.monotonic()
    result = fit(view, model_config=model_config, train_config=train_config, checkpoint_dir=run_dir / "checkpoint",
                 initial_weights=args.init_weights,
                 callbacks=[_budget_callback(run_dir, args.budget_hours * 3600)])
    seconds = time.monotonic() - started
    elapsed = run_dir / "elapsed.json"
    if elapsed.exists():
        seconds = json.loads(elapsed.read_text())["seconds"]
    saved = save_fit(result, dataset=dataset, out_dir=run_dir / "model", model_config=model_config,
                     train_config=train_config)
    metrics = evaluate(model_dir=saved.model_dir, dataset_dir=args.dataset, out_dir=run_dir / "evaluation")
    flipped = evaluate(model_dir=saved.model_dir, dataset_dir=args.dataset, out_dir=run_dir / "evaluation_flip",
                       flip_average=True)
    row = _result_row(args, name=args.name, model_config=model_config, train_config=train_config, result=result,
                      dataset=dataset, metrics=metrics, flipped=flipped, seconds=seconds)
    (run_dir / RESULT_FILE).write_text(json.dumps(row, indent=2) + "\n")
    write_results_table(args.out, include_paper=False)
    done = len(result.history["loss"])
    print(f"{args.name}: {done}/{epochs} epochs, emotion {row.get('emotion_accuracy', 0):.4f} "
          f"(flip {row.get('emotion_accuracy_flip', 0):.4f}); {'finished' if done >= epochs else 're-run to continue'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
