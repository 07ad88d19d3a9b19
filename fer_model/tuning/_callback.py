"""The Keras callback that feeds the per-epoch objective to the pruner (imports Keras: load lazily)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

import keras
import numpy as np

from fer_model.tuning.config import ObjectiveName
from fer_model.tuning.objective import EpochReport, epoch_value

logger = logging.getLogger(__name__)


class ObjectiveCallback(keras.callbacks.Callback):
    """After each epoch: compute the objective, report it, and stop training if the trial is pruned.

    Unlike `optuna_integration.KerasPruningCallback` it does not raise inside `fit`; it asks Keras to
    stop, so `fit` returns normally (restoring state, closing its callbacks) and the caller raises
    `TrialPruned`. It also computes macro-F1 and the pooled accuracy, which Keras logs do not hold.
    """

    def __init__(
        self,
        *,
        objective: ObjectiveName,
        val_labels: Mapping[str, np.ndarray],
        report: EpochReport,
        predict: Callable[[keras.Model], np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        self.objective = objective
        self.val_labels = val_labels
        self.report = report
        self.predict = predict
        self.values: list[float] = []

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        predict = (lambda: self.predict(self.model)) if self.predict is not None else None
        value = epoch_value(self.objective, logs=logs or {}, val_labels=self.val_labels, predict_emotion=predict)
        self.values.append(value)
        if self.report(epoch, value):
            logger.debug("pruned after epoch %d (%s=%.4f)", epoch + 1, self.objective, value)
            self.model.stop_training = True
        elif not math.isfinite(value):
            logger.warning("epoch %d: %s is %s", epoch + 1, self.objective, value)
