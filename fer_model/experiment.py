"""The paper's comparison on the data we have: single-task vs multi-task vs tuned multi-task.

Each run trains on one dataset artifact (e.g. FER2013 + UTKFace prepared together, masked), is
scored on its test split with `evaluation.evaluate`, and leaves `<out>/<run>/result.json`; runs are
independent, so they can go in parallel processes on one GPU, and `write_results_table` gathers
whatever results exist into results.md and results.json.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fer_model.dataset import Dataset, load_dataset
from fer_model.errors import ConfigError
from fer_model.model import ModelConfig
from fer_model.tasks import DEFAULT_LOSS_WEIGHTS, MISSING, TASK_NAMES, get_task
from fer_model.training import TrainConfig

logger = logging.getLogger(__name__)

RESULT_FILE = "result.json"

#: What the paper reports (validation accuracy of its own 90/10 splits), for the table's reference rows.
PAPER_RESULTS: tuple[dict[str, Any], ...] = (
    {"run": "paper: single-task, FER2013", "emotion_accuracy": 0.6791},
    {"run": "paper: multi-task, RAF-DB", "emotion_accuracy": 0.7926, "gender_accuracy": 0.7832,
     "race_accuracy": 0.8610, "age_accuracy": 0.7476},
)


@dataclass(frozen=True)
class RunSpec:
    """One row of the comparison: a name, what it is, and how to train it."""

    name: str
    description: str
    model_config: ModelConfig
    train_config: TrainConfig


@dataclass(frozen=True)
class Recipe:
    """Settings shared by every run of a comparison."""

    width: float = 1.0
    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 3e-4
    seed: int = 0
    augment: bool = False
    label_smoothing: float = 0.0
    mixed_precision: bool = False
    tuned_loss_weights: Mapping[str, float] | None = None
    verbose: int = 2
    extra: Mapping[str, Any] = field(default_factory=dict)


def standard_runs(recipe: Recipe) -> list[RunSpec]:
    """(a) single-task emotion, (b) multi-task with the paper's weights, (c) (b) with tuned weights."""
    model = ModelConfig(width=recipe.width, augment=recipe.augment)
    train = TrainConfig(
        epochs=recipe.epochs, batch_size=recipe.batch_size, learning_rate=recipe.learning_rate, seed=recipe.seed,
        label_smoothing=recipe.label_smoothing,
        mixed_precision=recipe.mixed_precision, verbose=recipe.verbose,
    )
    runs = [
        RunSpec("single_task", "emotion head only, emotion-labelled samples only",
                replace(model, tasks=("emotion",)), replace(train, loss_weights={"emotion": 1.0})),
        RunSpec("multi_task", "four heads, masked losses, the paper's weights (emotion 2, age 4, race 1.5, gender 0.1)",
                model, replace(train, loss_weights=dict(DEFAULT_LOSS_WEIGHTS))),
    ]
    if recipe.tuned_loss_weights:
        weights = {t: float(recipe.tuned_loss_weights[t]) for t in TASK_NAMES if t in recipe.tuned_loss_weights}
        runs.append(RunSpec("multi_task_tuned", "four heads, masked losses, Optuna-tuned weights",
                            model, replace(train, loss_weights=weights)))
    return runs


def labelled_view(dataset: Dataset, tasks: Sequence[str]) -> Dataset:
    """The samples labelled for at least one of `tasks`, in memory (the others would only cost time)."""
    keep = np.zeros(len(dataset), dtype=bool)
    for t in tasks:
        keep |= np.asarray(dataset.labels[t]) != MISSING
    idx = np.flatnonzero(keep)
    return Dataset(
        images=np.asarray(dataset.images[idx]), labels={t: np.asarray(a[idx]) for t, a in dataset.labels.items()},
        split=np.asarray(dataset.split[idx]), manifest=dataset.manifest, path=dataset.path,
    )


def _time_limit(seconds: float) -> Any:
    import keras

    class TimeLimit(keras.callbacks.Callback):
        """Stops after the epoch that crosses the budget; EarlyStopping still restores the best weights.

        The clock starts after the first training step: XLA compilation (over a minute when several
        runs share a machine) would otherwise eat the budget of the slower-compiling runs.
        """

        start: float | None = None

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if self.start is None:
                self.start = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if self.start is not None and time.monotonic() - self.start > seconds:
                logger.info("time limit of %.0f s reached after epoch %d", seconds, epoch + 1)
                self.model.stop_training = True

    return TimeLimit()


def _environment(label: str | None) -> dict[str, str]:
    import keras

    env = {"backend": keras.backend.backend(), "machine": label or platform.node(),
           "cpu_count": str(os.cpu_count())}
    if env["backend"] == "jax":
        import jax

        env["device"] = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    else:
        env["device"] = "cpu"
    return env


def emotion_by_predicted_group(
    true_emotion: np.ndarray, predictions: Mapping[str, np.ndarray]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Emotion accuracy per *predicted* gender / race / age group.

    Our emotion data carry no group labels, so this is the only bias lens on emotion we have; it
    inherits the group heads' own errors and says so by its name.
    """
    labelled = true_emotion != MISSING
    correct = predictions["emotion"] == true_emotion
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for attribute in ("gender", "race", "age"):
        if attribute not in predictions:
            continue
        rows = {}
        for index, group in enumerate(get_task(attribute).classes):
            mask = labelled & (predictions[attribute] == index)
            n = int(mask.sum())
            rows[group] = {"n": n, "emotion_accuracy": float(correct[mask].mean()) if n else None}
        table[attribute] = rows
    return table


def run_one(
    spec: RunSpec,
    *,
    dataset_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    time_limit_s: float | None = None,
    machine: str | None = None,
) -> dict[str, Any]:
    """Train, save, evaluate one run; write and return its result row."""
    from fer_model.evaluation import evaluate, predict_classes
    from fer_model.model_artifact import save_model_artifact
    from fer_model.training import alignment_settings, fit

    run_dir = Path(out_dir) / spec.name
    dataset = load_dataset(dataset_dir)
    view = labelled_view(dataset, spec.model_config.tasks)
    callbacks = [_time_limit(time_limit_s)] if time_limit_s else []
    started = time.monotonic()
    result = fit(view, model_config=spec.model_config, train_config=spec.train_config, callbacks=callbacks)
    seconds = time.monotonic() - started
    model_dir = save_model_artifact(
        run_dir / "model", model=result.model, model_config=spec.model_config, train_config=spec.train_config,
        history=result.history, best_epoch=result.best_epoch, dataset_manifest_sha256=dataset.manifest_sha256,
        alignment=alignment_settings(dataset.manifest),
    )
    metrics = evaluate(model_dir=model_dir, dataset_dir=dataset_dir, out_dir=run_dir / "evaluation", split="test")
    test_idx = dataset.indices("test")
    predicted = predict_classes(result.model, dataset.images, test_idx, tasks=spec.model_config.tasks, batch_size=512)
    epochs_run = len(next(iter(result.history.values())))
    row: dict[str, Any] = {
        "run": spec.name,
        "description": spec.description,
        "tasks": list(spec.model_config.tasks),
        "loss_weights": spec.train_config.weights_for(spec.model_config.tasks),
        "model": asdict(spec.model_config),
        "training": {k: v for k, v in asdict(spec.train_config).items() if k != "loss_weights"},
        "epochs_run": epochs_run,
        "best_epoch": result.best_epoch + 1,
        "train_seconds": round(seconds, 1),
        "val_emotion_accuracy": _at(result.history, "val_emotion_accuracy", result.best_epoch),
        "environment": _environment(machine),
        "dataset_manifest_sha256": dataset.manifest_sha256,
        "test_counts": {t: m["n_labelled"] for t, m in metrics["tasks"].items()},
    }
    for task, m in metrics["tasks"].items():
        row[f"{task}_accuracy"] = m["accuracy"]
        row[f"{task}_macro_f1"] = m["macro_f1"]
    if "emotion" in predicted:
        true_emotion = np.asarray(dataset.labels["emotion"][test_idx])
        row["emotion_by_predicted_group"] = emotion_by_predicted_group(true_emotion, predicted)
    (run_dir / RESULT_FILE).write_text(json.dumps(row, indent=2) + "\n")
    logger.info("run %s: %s", spec.name, {k: row.get(k) for k in ("emotion_accuracy", "age_accuracy")})
    return row


def _at(history: Mapping[str, Sequence[float]], key: str, epoch: int) -> float | None:
    values = history.get(key)
    return float(values[epoch]) if values else None


def _pct(value: Any) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def write_results_table(out_dir: str | os.PathLike[str], *, include_paper: bool = True) -> tuple[Path, Path]:
    """Gather `<out_dir>/*/result.json` into results.json and results.md (runs sorted by name)."""
    root = Path(out_dir)
    rows = [json.loads(p.read_text()) for p in sorted(root.glob(f"*/{RESULT_FILE}"))]
    if not rows:
        raise ConfigError(f"no {RESULT_FILE} under {root}; run `fer-mtl experiment run` first")
    (root / "results.json").write_text(json.dumps({"runs": rows, "paper": list(PAPER_RESULTS)}, indent=2) + "\n")
    head = ("| run | emotion acc % | emotion macro-F1 % | gender acc % | race acc % | age acc % "
            "| width | aug | epochs (best) | backend, device | train s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        env = r["environment"]
        lines.append(
            f"| {r['run']} | {_pct(r.get('emotion_accuracy'))} | {_pct(r.get('emotion_macro_f1'))} "
            f"| {_pct(r.get('gender_accuracy'))} | {_pct(r.get('race_accuracy'))} | {_pct(r.get('age_accuracy'))} "
            f"| {r['model']['width']} | {'yes' if r['model']['augment'] else 'no'} "
            f"| {r['epochs_run']} ({r['best_epoch']}) | {env['backend']}, {env['device']} | {r['train_seconds']} |"
        )
    if include_paper:
        for p in PAPER_RESULTS:
            lines.append(
                f"| {p['run']} | {_pct(p.get('emotion_accuracy'))} | | {_pct(p.get('gender_accuracy'))} "
                f"| {_pct(p.get('race_accuracy'))} | {_pct(p.get('age_accuracy'))} "
                "| 1.0 | no | 100 max | tensorflow | |"
            )
    md = root / "results.md"
    md.write_text("\n".join(lines) + "\n")
    return md, root / "results.json"
