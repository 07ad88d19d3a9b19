"""The Keras callbacks training uses: learning-rate floor, wall-clock budget, per-epoch objective.

Imports Keras at module level: load this module lazily (inside the functions that train).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import keras
from keras import ops

logger = logging.getLogger(__name__)


class LearningRateFloor(keras.callbacks.Callback):
    """Stops training at the end of the first epoch whose learning rate is below `min_lr`.

    Put it after ReduceLROnPlateau in the callback list so it sees that epoch's reduction.
    """

    def __init__(self, min_lr: float) -> None:
        super().__init__()
        self.min_lr = float(min_lr)
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        lr = float(ops.convert_to_numpy(self.model.optimizer.learning_rate))
        if lr < self.min_lr:
            logger.info("learning rate %.3g < %.3g after epoch %d: stopping", lr, self.min_lr, epoch + 1)
            self.stopped_epoch = epoch
            self.model.stop_training = True


class TimeLimit(keras.callbacks.Callback):
    """Stops after the epoch that crosses `seconds`; EarlyStopping still restores the best weights.

    The clock starts after the first training step: XLA compilation (over a minute when several
    runs share a machine) would otherwise eat the budget of the slower-compiling runs.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = float(seconds)
        self.start: float | None = None

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.start is None:
            self.start = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if self.start is not None and time.monotonic() - self.start > self.seconds:
            logger.info("time limit of %.0f s reached after epoch %d", self.seconds, epoch + 1)
            self.model.stop_training = True


class EpochObjective(keras.callbacks.Callback):
    """After each epoch: measure the objective, report it, and stop training if the report says so (pruned).

    Unlike `optuna_integration.KerasPruningCallback` it does not raise inside `fit`; it asks Keras to
    stop, so `fit` returns normally (restoring state, closing its callbacks) and the caller raises
    `TrialPruned`. `measure` gets the model and the epoch's logs, so it can compute what Keras logs do
    not hold (macro-F1, an accuracy pooled over tasks).

    Args:
        measure: (model, epoch logs) -> the objective's value after this epoch.
        report: (0-based epoch, value) -> True when training should stop now.
        name: The objective's name, for log lines.
    """

    def __init__(
        self,
        *,
        measure: Callable[[keras.Model, Mapping[str, float]], float],
        report: Callable[[int, float], bool],
        name: str = "objective",
    ) -> None:
        super().__init__()
        self.measure = measure
        self.report = report
        self.name = name
        self.values: list[float] = []

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        value = self.measure(self.model, logs or {})
        self.values.append(value)
        if self.report(epoch, value):
            logger.debug("pruned after epoch %d (%s=%.4f)", epoch + 1, self.name, value)
            self.model.stop_training = True
        elif not math.isfinite(value):
            logger.warning("epoch %d: %s is %s", epoch + 1, self.name, value)
