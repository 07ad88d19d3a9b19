"""The Keras callbacks training uses: learning-rate floor, wall-clock budget, per-epoch objective, progress
lines, the epoch checkpoint, the epoch hand-off to planned batches and BatchNorm recalibration.

Imports Keras at module level: load this module lazily (inside the functions that train).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import ops

from fer_model.checkpoint import Checkpoint, capture, restore_callbacks, write_checkpoint
from fer_model.progress import DEFAULT_EVERY_S, format_duration

if TYPE_CHECKING:
    from fer_model.batching import PlannedBatches

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


class EpochSync(keras.callbacks.Callback):
    """Tells a `batching.PlannedBatches` which epoch Keras is starting (its batches depend on it)."""

    def __init__(self, batches: PlannedBatches) -> None:
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.batches.epoch = epoch


class BatchNormRecalibration(keras.callbacks.Callback):
    """Before every validation, recomputes the BatchNorm statistics on a fixed sample of training faces.

    Validation, early stopping's best weights, the epoch checkpoint and the saved model then all use
    the statistics of the network as trained so far (`fer_model.model.recalibrate_batch_norm`), not
    moving averages that lag it. `on_test_begin` runs inside `fit` after the epoch's last step and
    before its validation pass, so the epoch's `val_*` metrics already see the new statistics.
    """

    def __init__(self, images: np.ndarray, *, batch_size: int = 256) -> None:
        super().__init__()
        self.images = images
        self.batch_size = int(batch_size)

    def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        from fer_model.model import recalibrate_batch_norm

        started = time.monotonic()
        recalibrate_batch_norm(self.model, self.images, batch_size=self.batch_size)
        logger.debug("BatchNorm statistics recomputed on %d training faces in %.1f s", len(self.images),
                     time.monotonic() - started)


class EpochCheckpoint(keras.callbacks.Callback):
    """Writes a `checkpoint.Checkpoint` at every epoch end; restores callback counters from `start` at train begin.

    Put it after the callbacks in `stateful` (their `on_train_begin` resets the counters this one then
    restores; their `on_epoch_end` updates what this one saves).

    Args:
        directory: Where `checkpoint.npz` goes.
        fingerprint: Identifies the settings (see `checkpoint.read_checkpoint`).
        stateful: name -> callback whose counters (and `best_weights`) belong in the checkpoint.
        start: The checkpoint this run resumes from, if any.
        total_epochs: The run's epoch budget; reaching it marks the checkpoint finished.
    """

    def __init__(self, directory: str | os.PathLike[str], *, fingerprint: str,
                 stateful: Mapping[str, keras.callbacks.Callback], start: Checkpoint | None,
                 total_epochs: int) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.stateful = dict(stateful)
        self.start = start
        self.total_epochs = total_epochs
        self.history: dict[str, list[float]] = {k: list(v) for k, v in (start.history if start else {}).items()}
        self.epochs_done = start.epochs_done if start else 0

    def on_train_begin(self, logs: Any = None) -> None:
        if self.start is not None:
            restore_callbacks(self.stateful, self.start)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(np.asarray(value)))
        self.epochs_done = epoch + 1
        self._write(finished=self.epochs_done >= self.total_epochs)

    def on_train_end(self, logs: Any = None) -> None:
        # Stopped by one of ours (early stopping, the rate floor): done for good, best weights already
        # restored. Stopped by anything else (a time limit, a signal): resumable, keep the epoch checkpoint.
        stopped = any(getattr(c, "stopped_epoch", None) for c in self.stateful.values())
        if stopped or self.epochs_done >= self.total_epochs:
            self._write(finished=True)

    def _write(self, *, finished: bool) -> None:
        checkpoint = capture(self.model, stateful=self.stateful, epochs_done=self.epochs_done,
                             fingerprint=self.fingerprint, history=self.history, finished=finished)
        write_checkpoint(self.directory, checkpoint)
        logger.debug("checkpoint after epoch %d written to %s", self.epochs_done, self.directory)
