"""One trial: sample loss weights, train, report the per-epoch objective for pruning, return its value.

Training is behind the `Trainer` protocol so the study machinery can be tested with a fast,
injected trainer; `FitTrainer` is the real one and trains through `fer_model.training.fit`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from fer_model.errors import ConfigError
from fer_model.tasks import get_task
from fer_model.training import TrainConfig
from fer_model.tuning.config import (
    BATCH_SIZE_PARAM,
    LEARNING_RATE_PARAM,
    LOSS_WEIGHT_PARAM,
    ObjectiveName,
    SearchSpace,
)

if TYPE_CHECKING:
    import keras
    import optuna

    from fer_model.dataset import Dataset
    from fer_model.model import ModelConfig

logger = logging.getLogger(__name__)


class EpochReport(Protocol):
    """Called by a trainer after every epoch with the objective's value; True means "stop now" (pruned)."""

    def __call__(self, epoch: int, value: float) -> bool: ...


@dataclass(frozen=True)
class TrialResult:
    """What a trainer returns: the objective's value and any further metrics worth recording."""

    value: float
    metrics: Mapping[str, float] = field(default_factory=dict)


class Trainer(Protocol):
    """Trains one configuration and returns the objective's value at the epoch whose weights it keeps."""

    def __call__(
        self, *, model_config: ModelConfig, train_config: TrainConfig, objective: ObjectiveName, report: EpochReport
    ) -> TrialResult: ...


def suggest_params(trial: optuna.Trial, *, search_space: SearchSpace, tasks: Sequence[str]) -> dict[str, float | int]:
    """Draw one point: a loss weight per task of the model, plus learning rate / batch size if searched."""
    params: dict[str, float | int] = {}
    for task in tasks:
        low, high = search_space.weight_range(task)
        params[LOSS_WEIGHT_PARAM + task] = trial.suggest_float(LOSS_WEIGHT_PARAM + task, low, high, log=True)
    if search_space.learning_rate is not None:
        low, high = search_space.learning_rate
        params[LEARNING_RATE_PARAM] = trial.suggest_float(LEARNING_RATE_PARAM, low, high, log=True)
    if search_space.batch_sizes:
        params[BATCH_SIZE_PARAM] = trial.suggest_categorical(BATCH_SIZE_PARAM, list(search_space.batch_sizes))
    return params


def params_to_settings(params: Mapping[str, object]) -> dict[str, object]:
    """Optuna params -> {"loss_weights": {task: w}, "learning_rate"?: lr, "batch_size"?: b}."""
    settings: dict[str, object] = {
        "loss_weights": {
            name[len(LOSS_WEIGHT_PARAM):]: float(value)  # type: ignore[arg-type]
            for name, value in params.items()
            if name.startswith(LOSS_WEIGHT_PARAM)
        }
    }
    if LEARNING_RATE_PARAM in params:
        settings[LEARNING_RATE_PARAM] = float(params[LEARNING_RATE_PARAM])  # type: ignore[arg-type]
    if BATCH_SIZE_PARAM in params:
        settings[BATCH_SIZE_PARAM] = int(params[BATCH_SIZE_PARAM])  # type: ignore[call-overload]
    return settings


def trial_train_config(train_config: TrainConfig, params: Mapping[str, object], *, epochs: int) -> TrainConfig:
    """`train_config` with the trial's settings and epoch budget; Keras output silenced (we print a line per trial)."""
    settings = params_to_settings(params)
    weights = {**train_config.loss_weights, **settings["loss_weights"]}  # type: ignore[dict-item]
    changes: dict[str, object] = {"loss_weights": weights, "epochs": epochs, "verbose": 0}
    for name in (LEARNING_RATE_PARAM, BATCH_SIZE_PARAM):
        if name in settings:
            changes[name] = settings[name]
    return dataclasses.replace(train_config, **changes)


def check_objective(objective: ObjectiveName, *, tasks: Sequence[str], val_labels: Mapping[str, np.ndarray]) -> None:
    """ConfigError if `objective` cannot be measured for a model with `tasks` on these validation labels."""
    if objective in ("emotion_accuracy", "emotion_macro_f1"):
        if "emotion" not in tasks:
            raise ConfigError(f"objective {objective!r} needs the emotion head; the model has only {list(tasks)}")
        if not (np.asarray(val_labels["emotion"]) >= 0).any():
            raise ConfigError(f"objective {objective!r} needs emotion labels in the validation split; it has none")
    elif not any((np.asarray(val_labels[t]) >= 0).any() for t in tasks):
        raise ConfigError(f"objective {objective!r} needs labelled validation samples for some of {list(tasks)}")


def epoch_value(
    objective: ObjectiveName,
    *,
    logs: Mapping[str, float],
    val_labels: Mapping[str, np.ndarray],
    predict_emotion: Callable[[], np.ndarray] | None = None,
) -> float:
    """The objective after one epoch.

    Args:
        objective: Which metric.
        logs: Keras epoch logs (`val_<task>_accuracy`, masked to labelled samples).
        val_labels: Validation labels per task (-1 = unlabelled), for macro-F1 and the pooling weights.
        predict_emotion: Returns the model's emotion class index per validation sample (macro-F1 only).
    """
    from fer_model.metrics import confusion_matrix, macro_f1

    if objective == "emotion_accuracy":
        return float(_log(logs, "val_emotion_accuracy"))
    if objective == "emotion_macro_f1":
        if predict_emotion is None:
            raise ConfigError("objective 'emotion_macro_f1' needs `predict_emotion`")
        num_classes = get_task("emotion").num_classes
        cm = confusion_matrix(np.asarray(val_labels["emotion"]), predict_emotion(), num_classes=num_classes)
        f1 = macro_f1(cm)
        return float("nan") if f1 is None else float(f1)
    # weighted_mean: accuracy pooled over every labelled (sample, task) pair, so a task counts in
    # proportion to its labelled validation samples and an unlabelled task counts not at all.
    total = weighted = 0.0
    for task, labels in val_labels.items():
        n = int((np.asarray(labels) >= 0).sum())
        if n:
            weighted += n * _log(logs, f"val_{task}_accuracy")
            total += n
    return weighted / total if total else float("nan")


def _log(logs: Mapping[str, float], key: str) -> float:
    if key not in logs:
        raise ConfigError(f"training logs lack {key!r} (have {sorted(logs)}); the objective cannot be measured")
    return float(logs[key])


class FitTrainer:
    """The real trainer: `fer_model.training.fit` on a dataset artifact loaded once per worker."""

    def __init__(self, dataset_dir: str | os.PathLike[str]) -> None:
        from fer_model.dataset import load_dataset

        # Loaded (and hash-checked) before the first trial, so a bad dataset fails the worker
        # with one clear error instead of failing every trial.
        self.dataset: Dataset = load_dataset(dataset_dir)
        _, self.val_labels = self.dataset.subset("validation")
        self._val_images: np.ndarray | None = None

    def __call__(
        self, *, model_config: ModelConfig, train_config: TrainConfig, objective: ObjectiveName, report: EpochReport
    ) -> TrialResult:
        import keras

        from fer_model.callbacks import EpochObjective
        from fer_model.training import fit

        labels = {t: self.val_labels[t] for t in model_config.tasks}
        check_objective(objective, tasks=model_config.tasks, val_labels=labels)
        predict = None
        if objective == "emotion_macro_f1":
            if self._val_images is None:
                images, _ = self.dataset.subset("validation")
                self._val_images = images[..., np.newaxis]
            predict = _emotion_predictor(self._val_images, batch_size=max(256, train_config.batch_size))
        callback = EpochObjective(
            measure=lambda model, logs: epoch_value(
                objective,
                logs=logs,
                val_labels=labels,
                predict_emotion=(lambda: predict(model)) if predict is not None else None,
            ),
            report=report,
            name=objective,
        )
        try:
            result = fit(self.dataset, model_config=model_config, train_config=train_config, callbacks=[callback])
            value = callback.values[result.best_epoch] if result.best_epoch < len(callback.values) else math.nan
            metrics = {k: v[result.best_epoch] for k, v in result.history.items() if k.startswith("val_")}
            metrics["best_epoch"] = float(result.best_epoch)
            return TrialResult(value=float(value), metrics=metrics)
        finally:
            # Each trial builds a fresh model; without this, graphs of earlier trials pile up in memory.
            keras.backend.clear_session()


def _emotion_predictor(images: np.ndarray, *, batch_size: int) -> Callable[[keras.Model], np.ndarray]:
    """A function of the model returning its emotion argmax on `images`."""

    def predict(model: keras.Model) -> np.ndarray:
        outputs = model.predict(images, batch_size=batch_size, verbose=0)
        return np.asarray(outputs["emotion"]).argmax(axis=-1)

    return predict
