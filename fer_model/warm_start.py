"""Warm starts: a new model begins from another model's weights, layer by layer.

The cheapest route to a better model on a small budget is to continue from the shipped one: its
layers are named by `build_model`, so any model of the same width copies across, head by head,
and a narrower one is widened into a wider model without changing its predictions
(`fer_model.widening`).

A warm-started run also draws its randomness afresh (`seed_after`): under the same seed it would
replay the batches, augmentation and dropout its initial weights were trained on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fer_model.artifact_files import KERAS_FILE
from fer_model.errors import ConfigError
from fer_model.model import SILENCED_BIAS
from fer_model.tasks import TASK_NAMES
from fer_model.widening import is_narrower, widen_into

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)


def copy_matching_weights(model: keras.Model, source: str | os.PathLike[str]) -> list[str]:
    """Copy weights from the `.keras` file (or model artifact folder) `source` into `model`, layer by layer.

    Layers are matched by name and copied where every weight's shape matches; when `source` is a
    narrower build of `model`, its trunk and shared heads are widened into `model` instead
    (`fer_model.widening.widen_into`); a wider build is refused. Head biases that `silence_classes` pushed to
    `SILENCED_BIAS` are reset to 0, so the new run may learn those classes.

    Returns:
        The names of the layers copied.

    Raises:
        ConfigError: `source` is missing, or a wider build than `model`.
    """
    from fer_model._keras_file import load_keras_model

    path = _keras_file(source)
    other = load_keras_model(path)  # checked and in safe mode: no code from the file runs
    if is_narrower(model, other):
        # No weight of a wider trunk fits a narrower one, so the run would start from scratch unannounced.
        raise ConfigError(f"initial weights {source} come from a wider model than this run's; pass one "
                          "of the same width or narrower (it is widened), or train at its width")
    if is_narrower(other, model):
        copied = widen_into(model, other)
        how = "widened"
    else:
        copied = _copy_same_shapes(model, other)
        how = "copied"
    for task in set(copied) & set(TASK_NAMES):
        head = model.get_layer(task)
        kernel, bias = head.get_weights()
        head.set_weights([kernel, np.where(bias <= SILENCED_BIAS / 2, 0.0, bias).astype(bias.dtype)])
    logger.info("initial weights from %s: %d of %d layers with weights %s", path, len(copied),
                sum(1 for layer in model.layers if layer.weights), how)
    return copied


def _copy_same_shapes(model: keras.Model, other: keras.Model) -> list[str]:
    by_name = {layer.name: layer for layer in other.layers}
    copied = []
    for layer in model.layers:
        donor = by_name.get(layer.name)
        if donor is None or not layer.weights:
            continue
        values = donor.get_weights()
        if [v.shape for v in values] != [tuple(w.shape) for w in layer.weights]:
            continue
        layer.set_weights(values)
        copied.append(layer.name)
    return copied


def seed_after(seed: int, source: str | os.PathLike[str]) -> int:
    """The seed of a run warm-started from `source`: `seed` mixed with the SHA-256 of its `.keras` file.

    The batch plan, augmentation and dropout are all drawn from the seed, so a stage continued from
    another under the same seed would replay its parent's first epochs face for face, transform for
    transform, and be re-taught what it has memorised. On real faces three such stages in a row
    reached 61%, 70% and 78% training emotion accuracy in epoch 2, each above every later epoch of
    its run, and the third's validation loss peaked there. The mix keeps runs reproducible: the same
    seed and the same file give the same run.

    Raises:
        ConfigError: `source` is missing.
    """
    from fer_model.dataset import sha256_file

    digest = sha256_file(_keras_file(source))
    return int(np.random.SeedSequence([seed, int(digest[:16], 16)]).generate_state(1)[0])


def _keras_file(source: str | os.PathLike[str]) -> Path:
    path = Path(source)
    if path.is_dir():
        path = path / KERAS_FILE
    if not path.is_file():
        raise ConfigError(f"initial weights {source} not found; pass a .keras file or a model artifact folder")
    return path
