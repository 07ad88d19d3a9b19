"""Evaluate a model artifact on one split of a dataset artifact.

Writes metrics.json (schema in docs/ARCHITECTURE.md), one confusion_<task>.png per task,
report.md and report.html (the same, PNGs inlined). Metrics are computed by `build_metrics` from
plain arrays, so they are testable without a model; `evaluate` only adds the artifact loading and
batched prediction around it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fer_model.artifact_files import (
    ClassMetrics,
    EvaluationMetrics,
    GroupAccuracy,
    ModelArtifactConfig,
    ModelInfo,
    TaskAccuracy,
    TaskMetrics,
    TrainingCopies,
)
from fer_model.dataset import Dataset, load_dataset
from fer_model.errors import ArtifactError, ConfigError, DataError
from fer_model.metrics import score_task
from fer_model.predict import predict_probabilities
from fer_model.records import SPLITS
from fer_model.report import write_report
from fer_model.split_overlap import Copies, training_copies
from fer_model.tasks import MISSING, get_task

logger = logging.getLogger(__name__)
#: Attributes the emotion accuracy is broken down by (ground-truth labels, not predictions).
FAIRNESS_ATTRIBUTES: tuple[str, ...] = ("gender", "race", "age")


def _fairness(
    emotion_true: np.ndarray, emotion_pred: np.ndarray, groups_of: Mapping[str, np.ndarray]
) -> dict[str, dict[str, GroupAccuracy]]:
    """Emotion accuracy per gender / race / age group (group indices from `groups_of`, -1 = none),
    over samples with an emotion label and a group."""
    emotion_labelled = emotion_true != MISSING
    table: dict[str, dict[str, GroupAccuracy]] = {}
    for attribute in (a for a in FAIRNESS_ATTRIBUTES if a in groups_of):
        groups: dict[str, GroupAccuracy] = {}
        for index, group in enumerate(get_task(attribute).classes):
            in_group = emotion_labelled & (groups_of[attribute] == index)
            n = int(in_group.sum())
            correct = int((emotion_true[in_group] == emotion_pred[in_group]).sum())
            groups[group] = GroupAccuracy(n=n, emotion_accuracy=correct / n if n else None)
        table[attribute] = groups
    return table


def _task_metrics(name: str, true: np.ndarray, pred: np.ndarray) -> TaskMetrics:
    task = get_task(name)
    scores = score_task(true, pred, num_classes=task.num_classes)
    pc = scores.per_class
    return TaskMetrics(
        accuracy=scores.accuracy,
        macro_f1=scores.macro_f1,
        n_labelled=scores.n_labelled,
        n_unlabelled=scores.n_unlabelled,
        classes=task.classes,
        confusion_matrix=tuple(tuple(int(c) for c in row) for row in scores.confusion),
        per_class={
            cls: ClassMetrics(precision=float(pc.precision[i]), recall=float(pc.recall[i]), f1=float(pc.f1[i]),
                              support=int(pc.support[i]))
            for i, cls in enumerate(task.classes)
        },
    )


def build_metrics(
    *,
    predictions: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    split: str,
    model_info: ModelInfo | None = None,
    training_copies: Copies | None = None,
) -> EvaluationMetrics:
    """The metrics.json content from predicted and true class indices of one split.

    Args:
        predictions: task -> int [N] predicted class, for the tasks the model has (only these are scored).
        labels: task -> int [N] true class, -1 where unlabelled; must cover every predicted task and
            the fairness attributes.
        split: Name of the evaluated split (recorded in the output).
        model_info: The "model" section (sha256 of the training dataset manifest, loss weights, ...).
        training_copies: Which faces copy a training face (masks of [N], `fer_model.split_overlap`);
            each task is then also scored without those faces.
    """
    if not predictions:
        raise DataError("no predictions to score: the model has no task heads")
    copies = [] if training_copies is None else [training_copies.exact, training_copies.either]
    arrays = [*predictions.values(), *labels.values(), *copies]
    n = {int(np.asarray(a).shape[0]) for a in arrays}
    if len(n) != 1:
        raise DataError(f"predictions and labels must all have the same length, got lengths {sorted(n)}")
    tasks: dict[str, TaskMetrics] = {}
    for name, pred in predictions.items():
        if name not in labels:
            raise DataError(f"labels lack task {name!r} that the model predicts")
        tasks[name] = _task_metrics(name, labels[name], pred)
        if tasks[name].n_labelled == 0:
            logger.warning("task %s has no labelled samples in split %s; its accuracy is null", name, split)
    fairness: dict[str, Any] = {}
    by_predicted: dict[str, Any] = {}
    if "emotion" in predictions:
        fairness = _fairness(labels["emotion"], predictions["emotion"], labels)
        # When no sample carries both an emotion and a group label (FER2013 + UTKFace), grouping by
        # the model's own group heads is the only lens left; it inherits those heads' errors.
        by_predicted = _fairness(labels["emotion"], predictions["emotion"], predictions)
    return EvaluationMetrics(split=split, num_samples=n.pop(), tasks=tasks, fairness=fairness,
                             fairness_by_predicted_group=by_predicted, model=model_info or ModelInfo(),
                             training_copies=None if training_copies is None
                             else _without_copies(predictions, labels, training_copies))


def _without_copies(predictions: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                    copies: Copies) -> TrainingCopies:
    """How many faces are training copies of each kind, and each task's accuracy on the others."""
    exact, copy = np.asarray(copies.exact, dtype=bool), np.asarray(copies.either, dtype=bool)
    without: dict[str, TaskAccuracy] = {}
    for name, pred in predictions.items():
        truth, guess = np.asarray(labels[name])[~copy], np.asarray(pred)[~copy]
        labelled = truth != MISSING
        accuracy = float((guess[labelled] == truth[labelled]).mean()) if labelled.any() else None
        without[name] = TaskAccuracy(n_labelled=int(labelled.sum()), accuracy=accuracy)
    n_near = None if copies.near is None else int((copies.near & ~exact).sum())
    return TrainingCopies(n=int(exact.sum()), n_near=n_near, without=without)


def _split_images(dataset: Dataset, split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    if split not in SPLITS:
        raise ConfigError(f"`split` must be one of {SPLITS}, got {split!r}")
    idx = dataset.indices(split)
    if idx.size == 0:
        counts = ", ".join(f"{s} {int(dataset.indices(s).size)}" for s in SPLITS)
        raise DataError(f"split {split!r} of dataset {dataset.path} is empty (samples per split: {counts}); "
                        "pass --split with a non-empty one")
    return idx, {t: np.asarray(a[idx]) for t, a in dataset.labels.items()}


def predict_classes(model: Any, images: np.ndarray, indices: np.ndarray, *, tasks: tuple[str, ...],
                    batch_size: int, flip_average: bool = False) -> dict[str, np.ndarray]:
    """Argmax class per task for `images[indices]`, predicted `batch_size` images at a time.

    With `flip_average`, each face's probabilities are averaged with its mirror image's
    (`predict.predict_probabilities`).

    Batches are sliced from the (memory-mapped) array one at a time, so a large split never sits in
    memory whole; only the int class indices are kept.
    """
    out: dict[str, list[np.ndarray]] = {t: [] for t in tasks}
    for start in range(0, indices.size, batch_size):
        batch = np.asarray(images[indices[start:start + batch_size]], dtype=np.uint8)[..., np.newaxis]
        if flip_average:
            probs = predict_probabilities(model, batch, tasks=tasks, flip_average=True)
        else:
            probs = model.predict_on_batch(batch)
        if not isinstance(probs, Mapping):
            raise ArtifactError(f"the model returned {type(probs).__name__}, expected a dict of task outputs")
        for t in tasks:
            out[t].append(np.argmax(np.asarray(probs[t]), axis=-1).astype(np.int64))
    return {t: np.concatenate(parts) for t, parts in out.items()}


def evaluate(
    *,
    model_dir: str | os.PathLike[str],
    dataset_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    split: str = "test",
    batch_size: int = 256,
    flip_average: bool = False,
) -> EvaluationMetrics:
    """Score a model artifact on one split and write metrics.json, confusion PNGs, report.md and report.html.

    `flip_average` averages each face's probabilities with its mirror image's (off by default).

    Returns:
        What was written to metrics.json.

    Raises:
        ConfigError: bad `split` or `batch_size`.
        DataError: the split is empty (the message lists the counts per split).
        ArtifactError: an artifact is missing, malformed, or does not fit the other.
    """
    if batch_size < 1:
        raise ConfigError(f"`batch_size` must be >= 1, got {batch_size}")
    from fer_model.model_artifact import load_model_artifact, read_model_config

    model_path = Path(model_dir)
    # Cheap checks (config, dataset, split) first, so a mistake costs no TensorFlow start-up.
    config = read_model_config(model_path)
    dataset = load_dataset(dataset_dir)
    idx, labels = _split_images(dataset, split)
    if config.input_size != dataset.images.shape[1]:
        raise ArtifactError(f"model {model_path} takes {config.input_size}px faces but dataset {dataset.path} holds "
                            f"{dataset.images.shape[1]}px ones; prepare the dataset with the model's alignment size")

    artifact = load_model_artifact(model_path)
    logger.info("predicting %d %s samples with %s", idx.size, split, model_path)
    predictions = predict_classes(artifact.model, dataset.images, idx, tasks=tuple(config.tasks),
                                  batch_size=batch_size, flip_average=flip_average)
    scored_faces = dataset.split_sha256(split)
    model_info = ModelInfo(
        path=str(model_path),
        dataset_manifest_sha256=config.dataset_manifest_sha256,
        evaluated_dataset_manifest_sha256=dataset.manifest_sha256,
        evaluated_split_sha256=scored_faces,
        dataset_matches=_is_training_split(config, dataset.manifest_sha256, split, scored_faces),
        loss_weights=dict(config.loss_weights),
        flip_average=flip_average,
    )
    # On the train split every face is its own copy: nothing is left to score without them.
    copies = None if split == "train" else training_copies(dataset, split)
    metrics = build_metrics(predictions=predictions, labels=labels, split=split, model_info=model_info,
                            training_copies=copies)
    # Written through a temporary name, so a reader (the pipeline's gate) never sees half a metrics.json.
    out = metrics.write(out_dir).parent
    write_report(metrics, out_dir=out, model_config=config)
    return metrics


def _is_training_split(config: ModelArtifactConfig, manifest_sha256: str, split: str, split_sha256: str) -> bool | None:
    """Whether the scored faces and labels are the model's training dataset's split of that name.

    The same manifest says so outright. A rebuild or a taught copy has another manifest hash, so then
    the split hash recorded at training time decides. None when the model records neither.
    """
    trained_on = config.dataset_manifest_sha256
    if trained_on and trained_on == manifest_sha256:
        return True
    recorded = (config.dataset_split_sha256 or {}).get(split)
    if recorded:
        return recorded == split_sha256
    return False if trained_on else None
