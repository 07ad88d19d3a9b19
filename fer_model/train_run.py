"""One training run end to end: dataset artifact in, model artifact out.

Kept apart from `training` (which only fits a model in memory) so that fitting never depends on the
artifact formats, and the artifact writer can import the training settings without a circle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fer_model.dataset import alignment_settings
from fer_model.records import SPLITS

if TYPE_CHECKING:
    from fer_model.dataset import Dataset
    from fer_model.model import ModelConfig
    from fer_model.training import FitResult, TrainConfig


@dataclass(frozen=True)
class TrainResult:
    """What `train` returns. `best_epoch` is a 0-based index into the `history` lists."""

    model_dir: Path
    history: dict[str, list[float]]
    best_epoch: int


def train(
    *,
    dataset_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    model_config: ModelConfig,
    train_config: TrainConfig,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    initial_weights: str | os.PathLike[str] | None = None,
) -> TrainResult:
    """Load a dataset artifact, fit a model on it and write the model artifact to `out_dir`.

    `checkpoint_dir` and `initial_weights` are passed to `fit`; a checkpoint inside `out_dir` goes
    away when the artifact replaces the folder. A `gs://` `checkpoint_dir` is fetched first (if there
    is one) and updated after every epoch, so a retried pod resumes the run (`checkpoint_location`).
    """
    from fer_model.dataset import load_dataset
    from fer_model.storage import is_gcs

    dataset = load_dataset(dataset_dir)
    fit_args = {"dataset": dataset, "model_config": model_config, "train_config": train_config,
                "initial_weights": initial_weights}
    if checkpoint_dir is not None and is_gcs(checkpoint_dir):
        result = _fit_mirrored(str(checkpoint_dir), **fit_args)
    else:
        from fer_model.training import fit

        result = fit(checkpoint_dir=checkpoint_dir, **fit_args)
    return save_fit(result, dataset=dataset, out_dir=out_dir, model_config=model_config, train_config=train_config)


def _fit_mirrored(uri: str, **fit_args: Any) -> FitResult:
    """`fit` with its epoch checkpoint in a local scratch folder mirrored to the gs:// prefix `uri`."""
    import tempfile

    from fer_model.checkpoint import MirrorCheckpoint, fetch_checkpoint
    from fer_model.training import fit

    with tempfile.TemporaryDirectory(prefix="fer-checkpoint-") as scratch:
        fetch_checkpoint(uri, scratch)
        return fit(checkpoint_dir=scratch, callbacks=[MirrorCheckpoint(scratch, uri)], **fit_args)


def checkpoint_location(*, model_uri: str, model_path: str) -> str:
    """Where a pipeline's train step keeps its epoch checkpoint: beside its model output, outside it.

    A KFP retry runs the same task again with the same output URI, so a checkpoint at
    `<model uri>.checkpoint` is where the retried pod looks. On gs:// that survives the killed pod; for
    a local output (kfp.local) the folder beside the output path does. Any other scheme (an S3/MinIO
    pipeline root, which fer_model.storage does not write) keeps it beside the local path, and a retry
    then starts over.
    """
    from fer_model.storage import is_gcs

    if is_gcs(model_uri):
        return model_uri.rstrip("/") + ".checkpoint"
    return str(Path(model_path)).rstrip("/") + ".checkpoint"


def save_fit(
    result: FitResult,
    *,
    dataset: Dataset,
    out_dir: str | os.PathLike[str],
    model_config: ModelConfig,
    train_config: TrainConfig,
) -> TrainResult:
    """Write the model artifact of a `fit` on `dataset` (its manifest and split hashes and alignment recorded)."""
    from fer_model.model_artifact import save_model_artifact

    model_dir = save_model_artifact(
        out_dir,
        model=result.model,
        model_config=model_config,
        train_config=train_config,
        history=result.history,
        best_epoch=result.best_epoch,
        dataset_manifest_sha256=dataset.manifest_sha256,
        alignment=alignment_settings(dataset.manifest),
        untrained_classes=result.untrained_classes,
        dataset_split_sha256={split: dataset.split_sha256(split) for split in SPLITS},
    )
    return TrainResult(model_dir=model_dir, history=result.history, best_epoch=result.best_epoch)
