"""One training run end to end: dataset artifact in, model artifact out.

Kept apart from `training` (which only fits a model in memory) so that fitting never depends on the
artifact formats, and the artifact writer can import the training settings without a circle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fer_model.dataset import alignment_settings

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
) -> TrainResult:
    """Load a dataset artifact, fit a model on it and write the model artifact to `out_dir`."""
    from fer_model.dataset import load_dataset
    from fer_model.training import fit

    dataset = load_dataset(dataset_dir)
    result = fit(dataset, model_config=model_config, train_config=train_config)
    return save_fit(result, dataset=dataset, out_dir=out_dir, model_config=model_config, train_config=train_config)


def save_fit(
    result: FitResult,
    *,
    dataset: Dataset,
    out_dir: str | os.PathLike[str],
    model_config: ModelConfig,
    train_config: TrainConfig,
) -> TrainResult:
    """Write the model artifact of a `fit` on `dataset` (its manifest hash and alignment recorded)."""
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
    )
    return TrainResult(model_dir=model_dir, history=result.history, best_epoch=result.best_epoch)
