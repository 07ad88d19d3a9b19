"""Masked, weighted multi-task training of the paper's CNN.

Each head has its own sparse categorical cross-entropy, masked per sample where the label is -1
(`tasks.MISSING`), so one run can mix sources that label different tasks (RAF-DB and FER2013).
Heads are weighted (`TrainConfig.loss_weights`); accuracy is measured on labelled samples only.
Batches come from in-memory numpy arrays (`fer_model.batching`), so `fit` runs under every Keras
backend; an optional epoch checkpoint (`fer_model.checkpoint`) makes a killed run resumable.
A dataset with teacher soft labels (`fer_model.teachers`) trains those tasks on true labels where
they exist and on the teacher's targets elsewhere (`fer_model.distillation`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fer_model._settings import Settings, check_bool, check_int, check_loss_weights, is_number
from fer_model.errors import ConfigError
from fer_model.model import ModelConfig, build_model, silence_classes
from fer_model.tasks import DEFAULT_LOSS_WEIGHTS, MISSING, get_task

if TYPE_CHECKING:
    import keras

    from fer_model.dataset import Dataset

logger = logging.getLogger(__name__)

SCHEDULES = ("plateau", "cosine", "onecycle")
_DISTILL_FIELDS = ("distill_weight", "distill_temperature", "distill_threshold")
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class TrainConfig(Settings):
    """Training hyper-parameters (defaults follow the paper's official recipe).

    Attributes:
        epochs: Upper bound on epochs; early stopping or the learning-rate floor usually end sooner.
        batch_size: Samples per step (the paper: 32).
        learning_rate: Adam's initial learning rate.
        loss_weights: Per-task loss weights; tasks the model lacks are ignored. Weight 0 freezes a head.
        early_stopping_patience: Epochs without a better validation accuracy before stopping. 12 (more
            than twice `reduce_lr_patience`) so ReduceLROnPlateau can lower the rate twice first.
        reduce_lr_patience: Epochs without improvement before the learning rate is multiplied by
            `reduce_lr_factor`.
        reduce_lr_factor: Multiplier applied on a plateau, in (0, 1).
        min_lr: Training stops once the learning rate falls below this.
        seed: Seeds Python, numpy and the backend (weights init, shuffling, dropout, augmentation).
            A warm-started run mixes in its initial weights' file hash (`fer_model.warm_start.seed_after`).
        mixed_precision: Train under the "mixed_float16" policy (worth it on GPUs only).
        label_smoothing: Cross-entropy label smoothing, in [0, 1).
        class_weighting: Weight emotion classes by inverse training frequency.
        verbose: Keras `fit` verbosity (0 silent, 1 progress bar, 2 one line per epoch); above 0 a
            log line per epoch too (`fer_model.callbacks.ProgressLog`).
        jit_compile: XLA-compile the TensorFlow train step; off by default because XLA halves CPU
            throughput here. Other backends use Keras' "auto" (JAX jit-compiles, torch runs eagerly).
        schedule: "plateau" (the paper: ReduceLROnPlateau and the `min_lr` floor), or a per-step
            "cosine" / "onecycle" decay that reaches ~0 at the last epoch (`fer_model.schedules`).
            Early stopping still watches a decaying run: set `early_stopping_patience` >= `epochs`
            to let it anneal to the end (the best epoch is restored either way).
        warmup_epochs: Epochs of linear warm-up before a cosine/one-cycle decay (ignored by plateau).
        optimizer: "adam", or "sgd" with Nesterov momentum 0.9.
        weight_decay: Decoupled weight decay of the optimizer (0 = none).
        balanced_batches: Every batch draws an equal share from each group of samples labelled for
            the same tasks, with an epoch as long as the monitored task's labels (`fer_model.batching`).
        distill_weight: Loss weight of a teacher soft target relative to a true label, for datasets
            with soft labels (`fer_model.teachers`); 0 ignores them. Datasets without are unaffected.
        distill_temperature: T of the soft-target loss: the student's probabilities are softened at
            T (and the term scaled by T^2); match the temperature the targets were made with.
        distill_threshold: Teacher targets whose top probability is below this are ignored, in [0, 1].
        distill_blend: On a face with both a true label and a teacher target (`fer-mtl teach
            --include-labelled`), the teacher term's share of its loss, in [0, 1]: (1 - blend) x the
            true label's + blend x the teacher's (Hinton-style distillation). 0 lets the true label win.
        bn_recalibration_samples: Before every validation, BatchNorm statistics are recomputed on this
            many seeded training faces in inference mode (`fer_model.model.recalibrate_batch_norm`),
            so validation and the saved model do not use moving averages that lag the weights; 0
            keeps Keras' moving averages. Costs one inference pass per BN layer over the sample: about
            4 s per validation for 1,024 faces at width 0.25 on 2 CPU cores.
        time_limit_s: Stop after the epoch that crosses this many seconds of training (0 = no limit),
            with the best epoch restored as usual. The clock starts after the first training step
            (tracing and XLA compilation do not count) and restarts when a run resumes. Sizes a run
            by the machine's measured speed rather than by a guessed epoch count (the demo's budget).
    """

    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 3e-4
    loss_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_LOSS_WEIGHTS))
    early_stopping_patience: int = 12
    reduce_lr_patience: int = 5
    reduce_lr_factor: float = 0.2
    min_lr: float = 1e-6
    seed: int = 0
    mixed_precision: bool = False
    label_smoothing: float = 0.0
    class_weighting: bool = False
    verbose: int = 2
    jit_compile: bool = False
    schedule: Literal["plateau", "cosine", "onecycle"] = "plateau"
    warmup_epochs: int = 0
    optimizer: Literal["adam", "sgd"] = "adam"
    weight_decay: float = 0.0
    balanced_batches: bool = False
    distill_weight: float = 1.0
    distill_temperature: float = 1.0
    distill_threshold: float = 0.0
    distill_blend: float = 0.0
    bn_recalibration_samples: int = 1024
    time_limit_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            check_int(name, getattr(self, name), minimum=1)
        for name in ("early_stopping_patience", "reduce_lr_patience", "seed", "warmup_epochs",
                     "bn_recalibration_samples"):
            check_int(name, getattr(self, name), minimum=0)
        for name in ("learning_rate", "min_lr"):
            value = getattr(self, name)
            if not is_number(value) or not value > 0:
                raise ConfigError(f"`{name}` must be a finite number > 0, got {value!r}")
        if not is_number(self.reduce_lr_factor) or not 0 < self.reduce_lr_factor < 1:
            raise ConfigError(f"`reduce_lr_factor` must be in (0, 1), got {self.reduce_lr_factor!r}")
        if not is_number(self.label_smoothing) or not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"`label_smoothing` must be in [0, 1), got {self.label_smoothing!r}")
        if self.verbose not in (0, 1, 2):
            raise ConfigError(f"`verbose` must be 0, 1 or 2, got {self.verbose!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"`schedule` must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"`optimizer` must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule != "plateau" and self.warmup_epochs >= self.epochs:
            raise ConfigError(f"`warmup_epochs` ({self.warmup_epochs}) must be below `epochs` ({self.epochs}) "
                              "so the schedule has epochs left to decay")
        if not is_number(self.time_limit_s) or not self.time_limit_s >= 0:
            raise ConfigError(f"`time_limit_s` must be a finite number >= 0 (0 = no limit), got {self.time_limit_s!r}")
        if not is_number(self.weight_decay) or not self.weight_decay >= 0:
            raise ConfigError(f"`weight_decay` must be a finite number >= 0, got {self.weight_decay!r}")
        if not is_number(self.distill_weight) or not self.distill_weight >= 0:
            raise ConfigError(f"`distill_weight` must be a finite number >= 0, got {self.distill_weight!r}")
        if not is_number(self.distill_temperature) or not self.distill_temperature > 0:
            raise ConfigError(f"`distill_temperature` must be a finite number > 0, got {self.distill_temperature!r}")
        if not is_number(self.distill_threshold) or not 0 <= self.distill_threshold <= 1:
            raise ConfigError(f"`distill_threshold` must be in [0, 1], got {self.distill_threshold!r}")
        if not is_number(self.distill_blend) or not 0 <= self.distill_blend <= 1:
            raise ConfigError(f"`distill_blend` must be in [0, 1], got {self.distill_blend!r}")
        for name in ("mixed_precision", "class_weighting", "jit_compile", "balanced_batches"):
            check_bool(name, getattr(self, name))
        # A private copy, so mutating the caller's dict cannot change a frozen config.
        object.__setattr__(self, "loss_weights", check_loss_weights(self.loss_weights))

    def weights_for(self, tasks: Sequence[str]) -> dict[str, float]:
        """Loss weight of each of `tasks` (1.0 for a task `loss_weights` does not mention)."""
        return {t: self.loss_weights.get(t, 1.0) for t in tasks}


@dataclass(frozen=True)
class FitResult:
    """What `fit` returns. `best_epoch` is a 0-based index into the `history` lists."""

    model: Any
    history: dict[str, list[float]]
    best_epoch: int
    untrained_classes: dict[str, list[str]] = field(default_factory=dict)


def monitor_metric(model_config: ModelConfig) -> str:
    """The validation metric early stopping and LR reduction watch (emotion if the model has it)."""
    task = "emotion" if "emotion" in model_config.tasks else model_config.tasks[0]
    return f"val_{task}_accuracy"


def untrained_classes(labels: Mapping[str, np.ndarray]) -> dict[str, list[str]]:
    """task -> its classes with no training label, for tasks that have some labels (others: nothing)."""
    out: dict[str, list[str]] = {}
    for name, values in labels.items():
        task = get_task(name)
        present = np.unique(values[values != MISSING])
        missing = [c for i, c in enumerate(task.classes) if i not in present]
        if present.size and missing:
            out[name] = missing
    return out


def emotion_class_weights(labels: np.ndarray) -> list[float]:
    """Inverse-frequency weights n / (K * n_c) per emotion class over labelled samples (0 if absent)."""
    k = get_task("emotion").num_classes
    counts = np.bincount(labels[labels != MISSING].astype(np.int64), minlength=k)[:k]
    total = counts.sum()
    return [float(total / (k * c)) if c else 0.0 for c in counts]


def _to_arrays(
    dataset: Dataset, split: str, tasks: Sequence[str], image_size: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    images, labels = dataset.subset(split)
    if images.ndim != 3 or images.shape[1:] != (image_size, image_size):
        raise ConfigError(
            f"dataset images are {images.shape[1:]}, the model expects ({image_size}, {image_size}); "
            f"set ModelConfig(image_size={images.shape[1] if images.ndim == 3 else '?'})"
        )
    # uint8 stays uint8 here (4x less memory); the model casts each batch to float32.
    return images[..., np.newaxis], {t: labels[t].astype(np.int32) for t in tasks}


def learning_rate_floor(min_lr: float) -> keras.callbacks.Callback:
    """A callback that stops training at the end of the first epoch whose learning rate is below `min_lr`."""
    from fer_model.callbacks import LearningRateFloor

    return LearningRateFloor(min_lr)


def _metric_name(task: str, model_config: ModelConfig) -> str:
    # Keras prefixes metric names with the output name only when there are several outputs; a
    # single-head model names its metric in full so history keys are `val_<task>_accuracy` either way.
    return "accuracy" if len(model_config.tasks) > 1 else f"{task}_accuracy"


def _jit_compile(train_config: TrainConfig) -> bool | str:
    import keras

    # The flag is about TensorFlow, where XLA slows CPU training. Un-jitted JAX runs op by op (far
    # too slow to train), and Keras' torch compile is experimental: leave those to Keras' "auto".
    return train_config.jit_compile if keras.backend.backend() == "tensorflow" else "auto"


def compile_model(
    model: keras.Model,
    *,
    model_config: ModelConfig,
    train_config: TrainConfig,
    class_weights: list[float] | None,
    steps_per_epoch: int = 1,
    soft_tasks: Sequence[str] = (),
) -> None:
    """Compile `model` with masked per-task losses, loss weights, masked accuracies and the configured optimizer.

    `steps_per_epoch` sizes a per-step schedule (cosine, one-cycle); the plateau recipe ignores it.
    `soft_tasks` train on packed targets (`fer_model.distillation`): true labels, else teacher targets.
    """
    from fer_model._keras_objects import MaskedAccuracy, MaskedSparseCrossentropy
    from fer_model.schedules import build_optimizer

    losses: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    for t in model_config.tasks:
        class_weights_of_task = class_weights if t == "emotion" else None
        if t in soft_tasks:
            from fer_model.distillation import MaskedDistillationLoss, TrueLabelAccuracy

            losses[t] = MaskedDistillationLoss(
                weight=train_config.distill_weight, temperature=train_config.distill_temperature,
                blend=train_config.distill_blend, label_smoothing=train_config.label_smoothing,
                class_weights=class_weights_of_task, name=f"{t}_loss",
            )
            metrics[t] = [TrueLabelAccuracy(name=_metric_name(t, model_config))]
        else:
            losses[t] = MaskedSparseCrossentropy(
                label_smoothing=train_config.label_smoothing, class_weights=class_weights_of_task, name=f"{t}_loss",
            )
            metrics[t] = [MaskedAccuracy(name=_metric_name(t, model_config))]
    model.compile(
        optimizer=build_optimizer(train_config, steps_per_epoch=steps_per_epoch),
        loss=losses,
        loss_weights=train_config.weights_for(model_config.tasks),
        metrics=metrics,
        jit_compile=_jit_compile(train_config),
    )


@dataclass(frozen=True)
class _Arrays:
    """Training and validation arrays of one fit, with the emotion class weights if asked for.

    `y_*` hold the true labels; `targets_*` what Keras trains and validates on: the same, except that
    the `soft_tasks` carry packed true-and-teacher targets (`fer_model.distillation.pack_targets`).
    """

    x_train: np.ndarray
    y_train: dict[str, np.ndarray]
    x_val: np.ndarray
    y_val: dict[str, np.ndarray]
    class_weights: list[float] | None
    targets_train: dict[str, np.ndarray]
    targets_val: dict[str, np.ndarray]
    soft_tasks: tuple[str, ...] = ()


def fit(
    dataset: Dataset,
    *,
    model_config: ModelConfig,
    train_config: TrainConfig,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    checkpoint_dir: str | os.PathLike[str] | None = None,
    initial_weights: str | os.PathLike[str] | None = None,
) -> FitResult:
    """Build and train a model on the dataset's train split, validating on its validation split.

    Args:
        dataset: A loaded dataset artifact (`fer_model.dataset.load_dataset`).
        model_config: Architecture (which heads, width, augmentation).
        train_config: Hyper-parameters.
        callbacks: Extra Keras callbacks (e.g. an Optuna pruning callback), run after ours.
        checkpoint_dir: Write an epoch checkpoint here (`fer_model.checkpoint`) and resume from the
            one already there, if any: a killed run re-run with the same settings loses no epoch.
        initial_weights: A `.keras` model (or model artifact folder) to start from instead of random
            weights, layer by layer where names and shapes match. Its file hash is mixed into the seed,
            so a resumed run needs the same file (the checkpoint's weights win over it).

    Returns:
        The model with the best epoch's weights restored, the per-epoch history (Keras keys such as
        `val_emotion_accuracy`, every epoch of a resumed run included) and the 0-based index of the
        best epoch.

    Raises:
        ConfigError: the train or validation split is empty, the image size does not match, every
            loss weight of the model's tasks is 0, or the checkpoint comes from other settings.
    """
    _validate_inputs(dataset, model_config=model_config, train_config=train_config)
    if initial_weights is not None:
        train_config = _warm_start_seeded(train_config, initial_weights)
    arrays = _arrays(dataset, model_config=model_config, train_config=train_config)
    batches = _training_batches(arrays, model_config=model_config, train_config=train_config)
    start = _read_start(checkpoint_dir, model_config=model_config, train_config=train_config, arrays=arrays)
    with _precision_policy(train_config):
        model = _build_and_compile(model_config=model_config, train_config=train_config, arrays=arrays,
                                   steps_per_epoch=len(batches), start=start, initial_weights=initial_weights)
        if start is not None and start.finished:
            logger.info("checkpoint in %s is of a finished run (%d epochs): not training", checkpoint_dir,
                        start.epochs_done)
            # The run may have died between its last epoch's checkpoint and restoring the best epoch.
            if start.callback_best_weights.get("early_stopping"):
                model.set_weights(start.callback_best_weights["early_stopping"])
            history = start.history
        else:
            ours = _callbacks(model_config=model_config, train_config=train_config, batches=batches,
                              checkpoint_dir=checkpoint_dir, start=start, arrays=arrays)
            history = _run(model, batches=batches, arrays=arrays, train_config=train_config,
                           callbacks=[*ours, *callbacks], start=start)
    return _finalize(model, history=history, model_config=model_config, y_train=arrays.y_train)


def _validate_inputs(dataset: Dataset, *, model_config: ModelConfig, train_config: TrainConfig) -> None:
    for split in ("train", "validation"):
        if dataset.indices(split).size == 0:
            raise ConfigError(
                f"dataset {dataset.path or '<in memory>'} has no {split!r} samples; re-run `fer-mtl prepare` "
                "with a validation split (e.g. its default seeded 10% of train) so training can early-stop"
            )
    weights = train_config.weights_for(model_config.tasks)
    if not any(weights.values()):
        raise ConfigError(f"every loss weight of the model's tasks {model_config.tasks} is 0; nothing would train")


def _warm_start_seeded(train_config: TrainConfig, initial_weights: str | os.PathLike[str]) -> TrainConfig:
    from fer_model.warm_start import seed_after

    seed = seed_after(train_config.seed, initial_weights)
    logger.info("warm start: seed %d becomes %d, so the run does not replay the one that made %s",
                train_config.seed, seed, initial_weights)
    return replace(train_config, seed=seed)


def _arrays(dataset: Dataset, *, model_config: ModelConfig, train_config: TrainConfig) -> _Arrays:
    x_train, y_train = _to_arrays(dataset, "train", model_config.tasks, model_config.image_size)
    x_val, y_val = _to_arrays(dataset, "validation", model_config.tasks, model_config.image_size)
    # Keras validates in stored order, where each source's faces sit together; a batch with no label
    # for a task logs loss 0 for it, which would deflate that task's validation loss to roughly the
    # fraction of batches holding its source. One seeded shuffle gives every batch the mix of sources.
    order = np.random.default_rng(train_config.seed).permutation(len(x_val))
    x_val, y_val = x_val[order], {t: v[order] for t, v in y_val.items()}
    class_weights = None
    if train_config.class_weighting and "emotion" in model_config.tasks:
        class_weights = emotion_class_weights(y_train["emotion"])
        logger.info("emotion class weights: %s", [round(w, 3) for w in class_weights])
    soft_tasks = _taught_tasks(dataset, model_config=model_config, train_config=train_config)
    soft_val = {t: v[order] for t, v in dataset.soft_subset("validation").items()}
    targets_train = _targets(y_train, dataset.soft_subset("train"), soft_tasks, train_config=train_config)
    targets_val = _targets(y_val, soft_val, soft_tasks, train_config=train_config)
    return _Arrays(x_train, y_train, x_val, y_val, class_weights, targets_train, targets_val, soft_tasks)


def _taught_tasks(dataset: Dataset, *, model_config: ModelConfig, train_config: TrainConfig) -> tuple[str, ...]:
    """The model's tasks that train on teacher targets: those with soft labels, unless `distill_weight` is 0."""
    tasks = tuple(t for t in model_config.tasks if t in dataset.soft_labels)
    if tasks and train_config.distill_weight == 0:
        logger.info("distill_weight is 0: ignoring the dataset's soft labels for %s", ", ".join(tasks))
        return ()
    provenance = dataset.manifest.get("soft_labels") or {}
    gap_only = [t for t in tasks if not provenance.get(t, {}).get("include_labelled")]
    if train_config.distill_blend and gap_only:
        # A warning only when the blend reaches no face at all; re-teaching some tasks on every face while
        # the others keep gap-only targets is a deliberate mix, worth a line in the log, not a warning.
        log = logger.warning if len(gap_only) == len(tasks) else logger.info
        log("distill_blend changes nothing for %s: its soft labels cover only faces without a true "
            "label (make them with `fer-mtl teach --include-labelled`)", ", ".join(gap_only))
    for t in tasks:
        temperature = provenance.get(t, {}).get("temperature")
        if temperature is not None and temperature != train_config.distill_temperature:
            logger.warning("%s soft labels were made at temperature %s but distill_temperature is %s",
                           t, temperature, train_config.distill_temperature)
    return tasks


def _targets(labels: dict[str, np.ndarray], soft: Mapping[str, np.ndarray], soft_tasks: Sequence[str], *,
             train_config: TrainConfig) -> dict[str, np.ndarray]:
    """`labels` with each of `soft_tasks` packed with its teacher targets (the dict itself when there are none)."""
    if not soft_tasks:
        return labels
    from fer_model.distillation import pack_targets, soft_target_count

    out = dict(labels)
    for t in soft_tasks:
        out[t] = pack_targets(labels[t], soft[t], threshold=train_config.distill_threshold,
                              blend=train_config.distill_blend)
        logger.info("%s: %d faces train on true labels, %d on teacher targets", t,
                    int((labels[t] != MISSING).sum()), soft_target_count(out[t]))
    return out


def _training_batches(arrays: _Arrays, *, model_config: ModelConfig, train_config: TrainConfig) -> Any:
    from fer_model.batching import PlannedBatches, plan_batches

    plan = plan_batches(arrays.y_train, tasks=model_config.tasks, monitor_task=_monitor_task(model_config),
                        batch_size=train_config.batch_size, seed=train_config.seed,
                        balanced=train_config.balanced_batches)
    if plan.pools is not None:
        logger.info("balanced batches: %d steps per epoch, shares %s of pools of %s samples", plan.steps_per_epoch,
                    plan.shares, [p.size for p in plan.pools])
    return PlannedBatches(arrays.x_train, arrays.targets_train, plan)


def _monitor_task(model_config: ModelConfig) -> str:
    return "emotion" if "emotion" in model_config.tasks else model_config.tasks[0]


def _fingerprint(*, model_config: ModelConfig, train_config: TrainConfig, arrays: _Arrays) -> str:
    """What a checkpoint must match to be resumed: every setting that changes training, and the data's size."""
    import hashlib
    import json
    from dataclasses import asdict

    # The distillation settings and targets count only when teachers are in play, so a run without
    # them keeps the fingerprint (and resumes the checkpoints) it had before they existed.
    # A time limit says when to stop, not how to train: a resumed run may get a new budget.
    ignored = {"verbose", "time_limit_s"} if arrays.soft_tasks else {"verbose", "time_limit_s", *_DISTILL_FIELDS}
    settings = {k: v for k, v in asdict(train_config).items() if k not in ignored}
    identity: list[Any] = [asdict(model_config), settings, len(arrays.x_train), len(arrays.x_val)]
    if arrays.soft_tasks:
        identity.append({t: int(np.isnan(arrays.targets_train[t]).sum()) for t in arrays.soft_tasks})
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _read_start(checkpoint_dir: str | os.PathLike[str] | None, *, model_config: ModelConfig,
                train_config: TrainConfig, arrays: _Arrays) -> Any:
    if checkpoint_dir is None:
        return None
    from fer_model.checkpoint import read_checkpoint

    fingerprint = _fingerprint(model_config=model_config, train_config=train_config, arrays=arrays)
    start = read_checkpoint(checkpoint_dir, fingerprint=fingerprint)
    if start is not None:
        logger.info("resuming from %s after epoch %d", checkpoint_dir, start.epochs_done)
    return start


@contextmanager
def _precision_policy(train_config: TrainConfig) -> Iterator[None]:
    import keras

    previous_policy = keras.mixed_precision.global_policy()
    if train_config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _build_and_compile(*, model_config: ModelConfig, train_config: TrainConfig, arrays: _Arrays,
                       steps_per_epoch: int, start: Any, initial_weights: str | os.PathLike[str] | None
                       ) -> keras.Model:
    import keras

    keras.utils.set_random_seed(train_config.seed)
    model = build_model(model_config)
    compile_model(model, model_config=model_config, train_config=train_config, class_weights=arrays.class_weights,
                  steps_per_epoch=steps_per_epoch, soft_tasks=arrays.soft_tasks)
    if start is not None:
        from fer_model.checkpoint import restore_model

        restore_model(model, start)
    elif initial_weights is not None:
        from fer_model.warm_start import copy_matching_weights

        copy_matching_weights(model, initial_weights)
    return model


def _callbacks(*, model_config: ModelConfig, train_config: TrainConfig, batches: Any,
               checkpoint_dir: str | os.PathLike[str] | None, start: Any, arrays: _Arrays
               ) -> list[keras.callbacks.Callback]:
    """Ours, in the order they must run: schedule (plateau only), stopping, then the checkpoint."""
    import keras

    from fer_model.callbacks import EpochSync

    monitor = monitor_metric(model_config)
    early_stopping = keras.callbacks.EarlyStopping(
        monitor=monitor, mode="max", patience=train_config.early_stopping_patience, restore_best_weights=True
    )
    stateful: dict[str, keras.callbacks.Callback] = {}
    if train_config.schedule == "plateau":
        # min_lr=0 here: the floor callback (not a clamp) ends training once the rate is below min_lr.
        stateful["reduce_lr"] = keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, mode="max", factor=train_config.reduce_lr_factor, patience=train_config.reduce_lr_patience
        )
        stateful["lr_floor"] = learning_rate_floor(train_config.min_lr)
    stateful["early_stopping"] = early_stopping
    ours: list[keras.callbacks.Callback] = [EpochSync(batches), *stateful.values()]
    if train_config.time_limit_s:
        from fer_model.callbacks import TimeLimit

        ours.append(TimeLimit(train_config.time_limit_s))
    if train_config.bn_recalibration_samples:
        ours.insert(0, _recalibration(arrays, train_config))
    if train_config.verbose:
        from fer_model.callbacks import ProgressLog

        # Keras' own lines go to stdout; these go through logging, so pod logs get them either way.
        ours.insert(0, ProgressLog())
    if checkpoint_dir is not None:
        from fer_model.callbacks import EpochCheckpoint

        fingerprint = _fingerprint(model_config=model_config, train_config=train_config, arrays=arrays)
        ours.append(EpochCheckpoint(checkpoint_dir, fingerprint=fingerprint, stateful=stateful, start=start,
                                    total_epochs=train_config.epochs))
    return ours


def _recalibration(arrays: _Arrays, train_config: TrainConfig) -> keras.callbacks.Callback:
    """The BatchNorm recalibration callback on a seeded sample of the training faces (all sources, as stored)."""
    from fer_model.callbacks import BatchNormRecalibration

    rng = np.random.default_rng(train_config.seed)
    count = min(train_config.bn_recalibration_samples, len(arrays.x_train))
    chosen = np.sort(rng.permutation(len(arrays.x_train))[:count])
    return BatchNormRecalibration(arrays.x_train[chosen], batch_size=max(train_config.batch_size, 256))


def _run(model: keras.Model, *, batches: Any, arrays: _Arrays, train_config: TrainConfig,
         callbacks: list[keras.callbacks.Callback], start: Any) -> dict[str, list[float]]:
    """`model.fit` from the checkpoint's epoch (or 0); returns the history of every epoch of the run."""
    initial_epoch = start.epochs_done if start is not None else 0
    logger.info(
        "training on %d samples (validation %d), epochs %d..%d, %d steps of batch %d",
        len(arrays.x_train), len(arrays.x_val), initial_epoch + 1, train_config.epochs, len(batches),
        train_config.batch_size,
    )
    keras_history = model.fit(
        batches,
        validation_data=(arrays.x_val, arrays.targets_val),
        validation_batch_size=train_config.batch_size,
        epochs=train_config.epochs,
        initial_epoch=initial_epoch,
        # The batches are shuffled (and balanced) by the plan; Keras' own shuffle is not seeded per epoch.
        shuffle=False,
        verbose=train_config.verbose,
        callbacks=callbacks,
    )
    history = {k: list(v) for k, v in (start.history if start is not None else {}).items()}
    for key, values in keras_history.history.items():
        history.setdefault(key, []).extend(float(v) for v in values)
    return history


def _finalize(model: keras.Model, *, history: dict[str, list[float]], model_config: ModelConfig,
              y_train: Mapping[str, np.ndarray]) -> FitResult:
    monitor = monitor_metric(model_config)
    best_epoch = best_epoch_of(history, monitor)
    logger.info(
        "best epoch %d of %d: %s=%.4f", best_epoch + 1, len(history[monitor]), monitor, history[monitor][best_epoch]
    )
    silenced = untrained_classes(y_train)
    if silenced:
        logger.info("classes without a training label, never predicted: %s", silenced)
        silence_classes(model, silenced)
    return FitResult(model=model, history=history, best_epoch=best_epoch, untrained_classes=silenced)


def best_epoch_of(history: Mapping[str, Sequence[float]], monitor: str) -> int:
    """0-based index of the first epoch with the highest `monitor` (what EarlyStopping restores)."""
    values = history.get(monitor)
    if not values:
        raise ConfigError(f"history has no {monitor!r} values; keys are {sorted(history)}")
    return int(np.argmax(np.asarray(values, dtype=np.float64)))

