"""The Keras callbacks training uses: learning-rate floor, wall-clock budget, per-epoch objective, progress lines.

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

from fer_model.progress import DEFAULT_EVERY_S, format_duration

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


class ProgressLog(keras.callbacks.Callback):
    """A log line per epoch (seconds, loss and validation metrics, ETA of the run), and one every
    `every_s` seconds inside a long epoch (step, rate, ETA of the epoch).

    Lines go through the module logger, whose handler flushes each record, so they reach `kfp.local`
    and pod logs as they happen, whatever Keras' own verbosity. The run's ETA assumes every
    remaining epoch runs; early stopping can only make it shorter.
    """

    def __init__(self, *, every_s: float = DEFAULT_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every_s = float(every_s)
        self.clock = clock
        self._run_start = self._epoch_start = self._last = 0.0
        self._epochs_here = 0
        self._epoch = 0  # 0-based; batch hooks are not told the epoch

    def on_train_begin(self, logs: Any = None) -> None:
        self._run_start = self.clock()
        self._epochs_here = 0

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._epoch = epoch
        self._epoch_start = self._last = self.clock()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        now = self.clock()
        if now - self._last < self.every_s:
            return
        self._last = now
        steps = self.params.get("steps")
        rate = (batch + 1) / max(now - self._epoch_start, 1e-9)
        eta = f", epoch ETA {format_duration((steps - batch - 1) / rate)}" if steps else ""
        logger.info("epoch %d/%d: step %d/%s, %.2f steps/s%s", self._epoch + 1, self._epochs, batch + 1,
                    steps or "?", rate, eta)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        now = self.clock()
        self._epochs_here += 1
        seconds = now - self._epoch_start
        left = self._epochs - (epoch + 1)
        per_epoch = (now - self._run_start) / self._epochs_here
        shown = ", ".join(f"{k} {float(v):.4f}" for k, v in sorted((logs or {}).items())
                          if k == "loss" or k.startswith("val_"))
        eta = f"; at most {left} more, ETA {format_duration(left * per_epoch)}" if left > 0 else ""
        logger.info("epoch %d/%d: %s, %s%s", epoch + 1, self._epochs, format_duration(seconds), shown, eta,
                    extra={"epoch": epoch + 1, "epochs": self._epochs, "seconds": seconds})

    @property
    def _epochs(self) -> int:
        return int(self.params.get("epochs") or 0)
