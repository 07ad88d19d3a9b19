"""Teachers fill the missing labels: trained models label the faces that lack a task's true label.

When sources label different tasks (FER2013 emotion, UTKFace gender/race/age), no face carries
both kinds. A teacher (a model artifact with a head for the task, typically a single-task model
trained on the source that labels it) predicts that task on every face of the chosen splits that
has no true label; its probabilities, softened at a temperature and kept only where the teacher
is confident enough, become the dataset's soft labels (dataset format 2), with their provenance
in the manifest. Faces with true labels keep them and get no teacher target unless
`include_labelled` asks for one. Training then uses true labels where they exist and teacher
targets elsewhere, or blends the two where both exist (`TrainConfig.distill_*`).

A teacher trained on one source can be skewed on another: a UTKFace age head puts strongly
expressive FER2013 faces in 0-3, because on UTKFace the crying, open-mouthed faces are babies'.
Distribution alignment (Berthelot et al., ReMixMatch, arXiv 1911.09785) corrects the skew before
it is taught: the teacher's probabilities over all the faces it labels are reweighted per class
until their mean equals the class shares of the task's true training labels.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fer_model import __version__
from fer_model._settings import Settings, check_bool, check_int, is_number
from fer_model.artifact_files import CONFIG_FILE, KERAS_FILE
from fer_model.dataset import WRITER_FIELDS, Dataset, load_dataset, sha256_file, write_dataset
from fer_model.errors import ArtifactError, ConfigError
from fer_model.records import SPLITS
from fer_model.tasks import MISSING, get_task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeachConfig(Settings):
    """How teachers label faces.

    Attributes:
        temperature: T > 0: stored targets are the teacher's probabilities softened as p^(1/T),
            renormalised (softmax of logits / T); 1 keeps them. Train with `distill_temperature` = T.
        threshold: A face gets no target when the teacher's own top probability (before softening)
            is below this, in [0, 1]; 0 keeps every target.
        splits: Splits whose faces are labelled; training reads only "train", so the validation and
            test splits stay judged on true labels alone.
        batch_size: Faces per forward pass.
        flip_average: Each face's probabilities are the mean of it and its mirror image's.
        align_distribution: Reweight each task's teacher probabilities per class so that their mean
            over the faces labelled equals the class shares of the task's true labels in the
            train split (`align_to_prior`), before the threshold and temperature.
        include_labelled: Also give a target to the faces that have a true label of the task, for
            Hinton-style distillation (train with `distill_blend` > 0 to use them; at 0 training
            ignores them).
    """

    temperature: float = 1.0
    threshold: float = 0.0
    splits: tuple[str, ...] = ("train",)
    batch_size: int = 256
    flip_average: bool = False
    align_distribution: bool = False
    include_labelled: bool = False

    def __post_init__(self) -> None:
        if not is_number(self.temperature) or not self.temperature > 0:
            raise ConfigError(f"`temperature` must be a finite number > 0, got {self.temperature!r}")
        if not is_number(self.threshold) or not 0 <= self.threshold <= 1:
            raise ConfigError(f"`threshold` must be in [0, 1], got {self.threshold!r}")
        object.__setattr__(self, "splits", tuple(self.splits))
        unknown = [s for s in self.splits if s not in SPLITS]
        if not self.splits or unknown:
            raise ConfigError(f"`splits` must name some of {', '.join(SPLITS)}, got {list(self.splits)!r}")
        check_int("batch_size", self.batch_size, minimum=1)
        check_bool("flip_average", self.flip_average)
        check_bool("align_distribution", self.align_distribution)
        check_bool("include_labelled", self.include_labelled)


def temper(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Rows of class probabilities softened at `temperature`: p^(1/T) / sum(p^(1/T)) (float64).

    The model's heads end in a softmax, so this is softmax(logits / T) without the logits.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if temperature == 1:
        return p / p.sum(axis=1, keepdims=True)
    # In log space, so tiny probabilities raised to a large power do not underflow to an all-zero row.
    with np.errstate(divide="ignore"):
        scaled = np.log(p) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    out = np.exp(scaled)
    return out / out.sum(axis=1, keepdims=True)


def align_to_prior(probabilities: np.ndarray, prior: np.ndarray, *, tolerance: float = 1e-6,
                   max_iterations: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Reweight rows of class probabilities per class so that their mean is `prior`.

    The fixed point of w <- w * prior / mean(normalise(p * w)) (the EM prior adjustment of
    Saerens et al., 2002, with the prior given): one weight per class, the same for every row, and
    each row renormalised. A class with no prior mass gets weight 0.

    Returns:
        (aligned float64 rows, the per-class weights).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    target = np.asarray(prior, dtype=np.float64)
    if target.shape != (p.shape[1],) or not np.all(target >= 0) or not target.sum() > 0:
        raise ConfigError(f"a prior for distribution alignment needs {p.shape[1]} non-negative shares, got {prior!r}")
    target = target / target.sum()
    weights = np.where(target > 0, 1.0, 0.0)
    aligned = p
    for _ in range(max_iterations):
        aligned = p * weights
        aligned /= np.maximum(aligned.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
        mean = aligned.mean(axis=0)
        if np.abs(mean - target).max() < tolerance:
            break
        weights = np.where(target > 0, weights * target / np.maximum(mean, np.finfo(np.float64).tiny), 0.0)
        weights /= weights.max()  # only their ratios matter; reported relative to the largest
    return aligned, weights


def class_shares(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of each class among the true labels in `labels` (MISSING ignored)."""
    known = np.asarray(labels)[np.asarray(labels) != MISSING]
    if known.size == 0:
        raise ConfigError("distribution alignment needs true labels of the task in the train split; there are none")
    return np.bincount(known, minlength=num_classes).astype(np.float64) / known.size


def teacher_fingerprint(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Where a teacher model artifact is and what it is: sha256 of its model.keras and config.json, its heads."""
    from fer_model.model_artifact import read_model_config

    root = Path(model_dir)
    config = read_model_config(root)
    keras_file = root / KERAS_FILE
    if not keras_file.is_file():
        raise ArtifactError(f"teacher {root} is incomplete: {KERAS_FILE} is missing (train it with `fer-mtl train`)")
    return {
        "path": str(root),
        "model_sha256": sha256_file(keras_file),
        "config_sha256": sha256_file(root / CONFIG_FILE),
        "heads": list(config.tasks),
        "trained_on_dataset_manifest_sha256": config.dataset_manifest_sha256,
    }


@dataclass(frozen=True)
class SoftLabels:
    """One teacher's output for one task: the [N, classes] targets (NaN rows: none) and what was dropped.

    `alignment` holds the prior and the per-class weights when the targets were distribution-aligned.
    """

    targets: np.ndarray
    candidates: int
    below_threshold: int
    alignment: dict[str, list[float]] | None = None


def teacher_probabilities(model: Any, images: np.ndarray, indices: np.ndarray, *, tasks: Sequence[str],
                          config: TeachConfig) -> dict[str, np.ndarray]:
    """task -> float64 [len(indices), classes] probabilities of `model` on `images[indices]`.

    Every head in `tasks` is read from the same forward pass, so one model teaching several tasks
    costs one pass over the faces, not one per task.

    Args:
        model: A Keras model whose outputs include every task of `tasks` (probabilities).
        images: uint8 [N, S, S], memory-mapped or not; read `config.batch_size` faces at a time.
        indices: Rows to run.
        tasks: The heads to read.
        config: Batch size and flip averaging.
    """
    from fer_model.predict import predict_probabilities

    probs = {t: np.empty((indices.size, get_task(t).num_classes), dtype=np.float64) for t in tasks}
    for start in range(0, indices.size, config.batch_size):
        rows = indices[start:start + config.batch_size]
        batch = np.asarray(images[rows], dtype=np.uint8)[..., np.newaxis]
        for task, p in predict_probabilities(model, batch, tasks=tasks, flip_average=config.flip_average).items():
            probs[task][start:start + rows.size] = p
    return probs


def soft_labels(probabilities: np.ndarray, indices: np.ndarray, *, num_faces: int, config: TeachConfig,
                prior: np.ndarray | None = None) -> SoftLabels:
    """A teacher's targets for `num_faces` faces from its `probabilities` on the faces `indices`.

    Args:
        probabilities: float [len(indices), classes], row i for face `indices[i]`.
        indices: The faces the teacher labels; every other row of the targets is NaN.
        num_faces: Rows of the targets (the dataset's faces).
        config: Temperature and threshold.
        prior: Class shares to align the probabilities to (`align_to_prior`) before the threshold; None: none.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    alignment = None
    if prior is not None and indices.size:
        probs, weights = align_to_prior(probs, prior)
        alignment = {"prior": [round(float(v), 6) for v in prior], "class_weights": [float(w) for w in weights]}
    confident = probs.max(axis=1) >= config.threshold
    targets = np.full((num_faces, probs.shape[1]), np.nan, dtype=np.float32)
    targets[indices[confident]] = temper(probs[confident], config.temperature)
    return SoftLabels(targets=targets, candidates=int(indices.size), below_threshold=int((~confident).sum()),
                      alignment=alignment)


def faces_to_label(dataset: Dataset, task: str, splits: Sequence[str], *, include_labelled: bool = False
                   ) -> np.ndarray:
    """Sorted indices of the faces in `splits` without a true `task` label (all of them with `include_labelled`)."""
    in_splits = np.sort(np.concatenate([dataset.indices(s) for s in splits]))
    if include_labelled:
        return in_splits
    return in_splits[np.asarray(dataset.labels[task])[in_splits] == MISSING]


def _check_teacher(task: str, model_dir: Path, *, image_size: int) -> None:
    from fer_model.model_artifact import read_model_config

    config = read_model_config(model_dir)
    if task not in config.tasks:
        raise ConfigError(f"teacher {model_dir} has no {task!r} head (it has {', '.join(config.tasks)}); "
                          f"pass a model trained with `fer-mtl train --tasks {task}` (or one including it)")
    if config.input_size != image_size:
        raise ConfigError(f"teacher {model_dir} takes {config.input_size}px faces but the dataset holds "
                          f"{image_size}px ones; pass a teacher trained on faces of the dataset's size")


def _resolve_teachers(teachers: Mapping[str, str | os.PathLike[str]], *, image_size: int) -> dict[str, Path]:
    from fer_model.storage import local_source

    resolved: dict[str, Path] = {}
    for task, location in teachers.items():
        get_task(task)
        resolved[task] = local_source(location)
        _check_teacher(task, resolved[task], image_size=image_size)
    return resolved


def teach(
    *,
    dataset_dir: str | os.PathLike[str],
    teachers: Mapping[str, str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    config: TeachConfig | None = None,
) -> Path:
    """Write a copy of the dataset artifact whose faces without a true label of each taught task carry
    that task's teacher targets, with their provenance; return its path.

    Args:
        dataset_dir: The dataset artifact to label (soft labels of tasks not taught here are kept).
        teachers: task -> model artifact (folder, or gs:// prefix) with a head for that task. Empty:
            the dataset is copied unchanged (a pipeline whose teacher stage has nothing to do).
        out_dir: The new dataset artifact (must differ from `dataset_dir`).
        config: Temperature, threshold, splits, batch size, flip averaging.

    Raises:
        ConfigError: an unknown task, a teacher without that head or of another input size, or
            `out_dir` the same as `dataset_dir`.
        ArtifactError: the dataset or a teacher artifact is missing or malformed.
    """
    config = config or TeachConfig()
    if Path(out_dir).resolve() == Path(dataset_dir).resolve():
        raise ConfigError(f"the taught dataset must go to a new folder, not over {dataset_dir}; pass another --out")
    dataset = load_dataset(dataset_dir)
    resolved = _resolve_teachers(teachers, image_size=int(dataset.images.shape[1]))
    soft = dict(dataset.soft_labels)
    provenance = {t: dict(p) for t, p in (dataset.manifest.get("soft_labels") or {}).items()}
    for model_dir, tasks in _by_model(resolved):
        for task in tasks:
            if task in soft:
                logger.info("replacing the dataset's %s soft labels with %s's", task, model_dir)
        for task, made in _run_teacher(dataset, tasks=tasks, model_dir=model_dir, config=config).items():
            soft[task] = made.targets
            provenance[task] = _provenance(dataset, task=task, model_dir=model_dir, config=config, made=made)
    return _write_taught(dataset, out_dir=out_dir, soft=soft, provenance=provenance)


def _by_model(resolved: Mapping[str, Path]) -> list[tuple[Path, list[str]]]:
    """(model artifact as first given, its tasks) in the order given, so each model loads and runs once."""
    groups: dict[Path, tuple[Path, list[str]]] = {}
    for task, model_dir in resolved.items():
        groups.setdefault(model_dir.resolve(), (model_dir, []))[1].append(task)
    return list(groups.values())


def _run_teacher(dataset: Dataset, *, tasks: Sequence[str], model_dir: Path, config: TeachConfig
                 ) -> dict[str, SoftLabels]:
    """task -> the targets `model_dir` gives it; one forward pass over the faces any of `tasks` labels."""
    from fer_model.model_artifact import load_model_artifact

    faces = {t: faces_to_label(dataset, t, config.splits, include_labelled=config.include_labelled) for t in tasks}
    union = np.unique(np.concatenate(list(faces.values())))
    artifact = load_model_artifact(model_dir)
    probs = teacher_probabilities(artifact.model, dataset.images, union, tasks=tasks, config=config)
    train = dataset.indices("train")
    made: dict[str, SoftLabels] = {}
    for task, indices in faces.items():
        prior = None
        if config.align_distribution:
            prior = class_shares(np.asarray(dataset.labels[task])[train], get_task(task).num_classes)
        rows = np.searchsorted(union, indices)
        made[task] = one = soft_labels(probs[task][rows], indices, num_faces=len(dataset.images), config=config,
                                       prior=prior)
        logger.info("teacher %s gave %s targets to %d of %d faces%s (%d below threshold %s)", model_dir, task,
                    one.candidates - one.below_threshold, one.candidates,
                    "" if config.include_labelled else " without a true label", one.below_threshold, config.threshold)
    return made


def _provenance(dataset: Dataset, *, task: str, model_dir: Path, config: TeachConfig, made: SoftLabels
                ) -> dict[str, Any]:
    return {
        "teacher": teacher_fingerprint(model_dir),
        "temperature": config.temperature,
        "threshold": config.threshold,
        "flip_average": config.flip_average,
        "distribution_alignment": made.alignment,
        "faces": (f"all faces of splits {', '.join(config.splits)}" if config.include_labelled
                  else f"faces of splits {', '.join(config.splits)} without a true {task} label"),
        "include_labelled": config.include_labelled,
        "splits": list(config.splits),
        "candidates": made.candidates,
        "below_threshold": made.below_threshold,
        "source_dataset_manifest_sha256": dataset.manifest_sha256,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "library_version": __version__,
    }


def _write_taught(dataset: Dataset, *, out_dir: str | os.PathLike[str], soft: Mapping[str, np.ndarray],
                  provenance: Mapping[str, Mapping[str, Any]]) -> Path:
    manifest = dataset.manifest
    extra = {k: v for k, v in manifest.items() if k not in WRITER_FIELDS and not k.startswith("_")}
    return write_dataset(
        out_dir, images=np.asarray(dataset.images), labels=dataset.labels, split=dataset.split,
        sources=manifest.get("sources"), alignment=manifest.get("alignment"), rejects=manifest.get("rejects"),
        extra=extra, soft_labels=soft, soft_label_provenance=provenance,
    )
