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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fer_model.dataset import Dataset, load_dataset
from fer_model.errors import ConfigError
from fer_model.model import ModelConfig
from fer_model.tasks import DEFAULT_LOSS_WEIGHTS, MISSING, TASK_NAMES
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


def standard_runs(
    *, model_config: ModelConfig, train_config: TrainConfig, tuned_loss_weights: Mapping[str, float] | None = None
) -> list[RunSpec]:
    """(a) single-task emotion, (b) multi-task with the paper's weights, (c) (b) with tuned weights.

    Every run shares `model_config` and `train_config`; only the heads and loss weights differ.
    """
    model, train = model_config, train_config
    runs = [
        RunSpec("single_task", "emotion head only, emotion-labelled samples only",
                replace(model, tasks=("emotion",)), replace(train, loss_weights={"emotion": 1.0})),
        RunSpec("multi_task", "four heads, masked losses, the paper's weights (emotion 2, age 4, race 1.5, gender 0.1)",
                model, replace(train, loss_weights=dict(DEFAULT_LOSS_WEIGHTS))),
    ]
    if tuned_loss_weights:
        weights = {t: float(tuned_loss_weights[t]) for t in TASK_NAMES if t in tuned_loss_weights}
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


def run_one(
    spec: RunSpec,
    *,
    dataset_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    machine: str | None = None,
) -> dict[str, Any]:
    """Train, save, evaluate one run; write and return its result row."""
    from fer_model.evaluation import evaluate
    from fer_model.train_run import save_fit
    from fer_model.training import fit

    run_dir = Path(out_dir) / spec.name
    dataset = load_dataset(dataset_dir)
    view = labelled_view(dataset, spec.model_config.tasks)
    started = time.monotonic()
    result = fit(view, model_config=spec.model_config, train_config=spec.train_config)
    seconds = time.monotonic() - started
    # The artifact records the full dataset's hash: it is what the model is evaluated against.
    saved = save_fit(result, dataset=dataset, out_dir=run_dir / "model", model_config=spec.model_config,
                     train_config=spec.train_config)
    metrics = evaluate(model_dir=saved.model_dir, dataset_dir=dataset_dir, out_dir=run_dir / "evaluation",
                       split="test")
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
        "test_counts": {t: m.n_labelled for t, m in metrics.tasks.items()},
    }
    for task, m in metrics.tasks.items():
        row[f"{task}_accuracy"] = m.accuracy
        row[f"{task}_macro_f1"] = m.macro_f1
    if metrics.fairness_by_predicted_group:
        row["emotion_by_predicted_group"] = metrics.to_dict()["fairness_by_predicted_group"]
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
