"""What a loss-weight search explores (`SearchSpace`) and how it runs (`TuneConfig`).

Both are frozen and validated on construction, so a bad flag fails before any worker starts.
Nothing here imports Optuna or TensorFlow: the CLI's `--help` and pipeline compilation read them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

from fer_model._settings import Settings, check_int, is_number
from fer_model.errors import ConfigError
from fer_model.tasks import TASK_NAMES
from fer_model.tuning._storage import storage_kind

if TYPE_CHECKING:
    from fer_model.model import ModelConfig

ObjectiveName = Literal["emotion_accuracy", "emotion_macro_f1", "weighted_mean"]
PrunerName = Literal["median", "hyperband", "none"]
OBJECTIVES: tuple[str, ...] = get_args(ObjectiveName)
PRUNERS: tuple[str, ...] = get_args(PrunerName)

#: Default log-uniform range of every task's loss weight. The paper's weights (0.1 .. 4) sit well
#: inside it, and 200x between the ends lets the search both silence and dominate a head.
DEFAULT_WEIGHT_RANGE: tuple[float, float] = (0.05, 10.0)

#: Prefix of the Optuna parameter holding a task's loss weight: `loss_weight_emotion`, ...
LOSS_WEIGHT_PARAM = "loss_weight_"
LEARNING_RATE_PARAM = "learning_rate"
BATCH_SIZE_PARAM = "batch_size"

# Optuna study names end up in URLs, file names and KFP parameters: keep them boring.
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _check_log_range(name: str, value: object) -> tuple[float, float]:
    """A (low, high) pair with 0 < low < high, as floats; ConfigError naming `name` otherwise."""
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise ConfigError(f"`{name}` must be a (low, high) pair, got {value!r}")
    low, high = value
    if not (is_number(low) and is_number(high)) or not 0 < low < high:
        raise ConfigError(f"`{name}` must satisfy 0 < low < high (a log-uniform range), got {value!r}")
    return float(low), float(high)


@dataclass(frozen=True)
class SearchSpace(Settings):
    """Ranges the sampler draws from.

    Attributes:
        loss_weights: Task -> (low, high) log-uniform range of its loss weight. Tasks left out get
            `DEFAULT_WEIGHT_RANGE`; only the tasks the model has are searched.
        learning_rate: Optional (low, high) log-uniform range for Adam's learning rate; None keeps
            `TrainConfig.learning_rate`.
        batch_sizes: Optional batch sizes to choose from; empty keeps `TrainConfig.batch_size`.
    """

    loss_weights: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    learning_rate: tuple[float, float] | None = None
    batch_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.loss_weights, Mapping):
            raise ConfigError(f"`loss_weights` must map task -> (low, high), got {self.loss_weights!r}")
        unknown = [t for t in self.loss_weights if t not in TASK_NAMES]
        if unknown:
            raise ConfigError(f"`loss_weights` has unknown task(s) {unknown}; expected some of {TASK_NAMES}")
        ranges = {
            t: _check_log_range(f"loss_weights[{t!r}]", self.loss_weights.get(t, DEFAULT_WEIGHT_RANGE))
            for t in TASK_NAMES
        }
        # A private, complete copy: every task has a range and the caller's dict cannot change it.
        object.__setattr__(self, "loss_weights", ranges)
        if self.learning_rate is not None:
            object.__setattr__(self, "learning_rate", _check_log_range("learning_rate", self.learning_rate))
        sizes = tuple(self.batch_sizes)
        for size in sizes:
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ConfigError(f"`batch_sizes` must hold ints >= 1, got {list(sizes)!r}")
        if len(set(sizes)) != len(sizes):
            raise ConfigError(f"`batch_sizes` has duplicates: {list(sizes)}")
        object.__setattr__(self, "batch_sizes", sizes)

    def weight_range(self, task: str) -> tuple[float, float]:
        """The (low, high) loss-weight range of `task`."""
        return self.loss_weights[task]


@dataclass(frozen=True)
class TuneConfig(Settings):
    """How a study runs. One study is shared by every worker that names the same storage and study.

    Attributes:
        study_name: Name of the Optuna study (letters, digits, `_ . -`).
        storage: A journal file path (default kind; file-locked, for processes sharing a disk) or a
            `postgresql://user:password@host:port/db` URL (for pipeline pods).
        n_trials: Study-wide target: workers stop once the study holds this many trials, so N
            parallel workers together run exactly this many.
        objective: Validation metric to maximise: emotion accuracy (the paper's), emotion macro-F1
            (from predictions on the validation split), or the accuracy pooled over every labelled
            (sample, task) pair of the model's tasks (`weighted_mean`: each task weighted by its
            number of labelled validation samples).
        pruner: Stop unpromising trials early on the per-epoch objective ("none" to disable).
        seed: TPE seed; worker `i` uses `seed + i` so parallel workers sample different points.
        epochs: Training epochs per trial (overrides `TrainConfig.epochs`).
        width: Layer width multiplier of the trial models (overrides `ModelConfig.width`); None
            trains trials at the width of the run being tuned for. A smaller width is cheaper, but
            the weights found may suit the full-width model less well.
        timeout: Seconds after which a worker claims no new trial (None = no limit).
        pruner_startup_trials: Trials that finish before the median pruner prunes anything.
        pruner_warmup_epochs: Epochs of every trial that are never pruned.
        heartbeat_interval: Seconds between a running trial's heartbeats (PostgreSQL only).
        grace_period: Seconds without a heartbeat after which a trial counts as dead; it is then
            marked FAIL and re-queued once (PostgreSQL only).
    """

    study_name: str
    storage: str
    n_trials: int = 20
    objective: ObjectiveName = "emotion_accuracy"
    pruner: PrunerName = "median"
    seed: int = 0
    epochs: int = 10
    width: float | None = None
    timeout: float | None = None
    pruner_startup_trials: int = 5
    pruner_warmup_epochs: int = 1
    heartbeat_interval: int = 60
    grace_period: int = 180

    def __post_init__(self) -> None:
        if not isinstance(self.study_name, str) or not _STUDY_NAME.match(self.study_name):
            raise ConfigError(
                f"`study_name` must be 1-128 letters, digits, '_', '.' or '-' starting with a letter or digit, "
                f"got {self.study_name!r}"
            )
        if not isinstance(self.storage, str) or not self.storage.strip():
            raise ConfigError(
                f"`storage` must be a journal file path or a postgresql:// URL, got {self.storage!r}"
            )
        storage_kind(self.storage)  # rejects other URL schemes now, before any dataset is loaded
        for name, minimum in (
            ("n_trials", 1), ("epochs", 1), ("seed", 0), ("pruner_startup_trials", 0),
            ("pruner_warmup_epochs", 0), ("heartbeat_interval", 1), ("grace_period", 1),
        ):
            check_int(name, getattr(self, name), minimum=minimum)
        if self.grace_period <= self.heartbeat_interval:
            raise ConfigError(
                f"`grace_period` ({self.grace_period}s) must exceed `heartbeat_interval` "
                f"({self.heartbeat_interval}s), or live trials would be declared dead"
            )
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"`objective` must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"`pruner` must be one of {PRUNERS}, got {self.pruner!r}")
        if self.width is not None and (not is_number(self.width) or not self.width > 0):
            raise ConfigError(f"`width` must be None or > 0, got {self.width!r} (a finite number)")
        if self.timeout is not None and (not is_number(self.timeout) or self.timeout <= 0):
            raise ConfigError(f"`timeout` must be a number of seconds > 0 or None, got {self.timeout!r}")

    def trial_model(self, model_config: ModelConfig) -> ModelConfig:
        """The architecture each trial trains: the run's `model_config`, at `width` when one is set."""
        return model_config if self.width is None else dataclasses.replace(model_config, width=self.width)
