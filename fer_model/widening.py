"""Widening: a trained model grows to a larger width and still computes the same function (Net2WiderNet).

Chen, Goodfellow & Shlens (arXiv 1511.05641): every unit of a wider layer copies a unit of the
narrower one (each original unit once, the extra units drawn at random), and the next layer splits
each original unit's outgoing weights among its copies, so the wider network's outputs are the
narrower one's. The split is uneven (random shares that sum to 1), so the copies get different
gradients and learn apart. What it is for: the extra capacity starts from hours of training and
from the model's accuracy, not from chance, e.g. to grow a teacher from the shipped model.

Works on models from `fer_model.model.build_model` (layer names and order are its own).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fer_model.errors import ConfigError
from fer_model.tasks import TASK_NAMES

if TYPE_CHECKING:
    import keras

#: The trunk's convolutions, in order, each followed by the BatchNormalization layer named beside it.
_CONVS = tuple((f"block{b}_conv{c}", f"block{b}_bn{c}") for b in (1, 2, 3) for c in (1, 2))
#: Relative spread of the shares a unit's copies split its outgoing weights by (they still sum to 1).
_SHARE_NOISE = 0.1


def is_narrower(donor: keras.Model, model: keras.Model) -> bool:
    """Whether `donor` is a narrower build of `model`'s trunk (fewer first-layer filters)."""
    try:
        return int(donor.get_layer(_CONVS[0][0]).filters) < int(model.get_layer(_CONVS[0][0]).filters)
    except ValueError:
        return False


def unit_map(source: int, target: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Which source unit each of `target` units copies, and its share of that unit's outgoing weights.

    Units 0..source-1 copy themselves; the rest copy units drawn at random. The shares of one
    unit's copies are 1/copies, spread by +-`_SHARE_NOISE` relative and re-centred to sum to 1.
    """
    if target < source:
        raise ConfigError(f"widening cannot narrow a layer from {source} to {target} units")
    copies_of = np.concatenate([np.arange(source), rng.integers(0, source, size=target - source)])
    counts = np.bincount(copies_of, minlength=source).astype(np.float64)
    noise = rng.uniform(-_SHARE_NOISE, _SHARE_NOISE, size=target)
    noise -= (np.bincount(copies_of, weights=noise, minlength=source) / counts)[copies_of]
    return copies_of, (1.0 + noise) / counts[copies_of]


def widen_into(model: keras.Model, donor: keras.Model, *, seed: int = 0) -> list[str]:
    """Set `model`'s trunk and the heads it shares with `donor` to `donor`'s weights, widened; return the layers set.

    Both come from `build_model` at widths with `model`'s no narrower in any layer. Heads `donor`
    lacks keep their weights. The widened `model` predicts what `donor` does (to float rounding).

    Raises:
        ConfigError: a layer of `model` is narrower than `donor`'s, or a trunk layer is missing.
    """
    rng = np.random.default_rng(seed)
    copies_of: np.ndarray | None = None
    shares: np.ndarray | None = None
    channels = 0
    done: list[str] = []
    try:
        for conv_name, bn_name in _CONVS:
            kernel, bias = donor.get_layer(conv_name).get_weights()
            if copies_of is not None:
                kernel = kernel[:, :, copies_of, :] * shares[np.newaxis, np.newaxis, :, np.newaxis]
            channels = kernel.shape[-1]
            copies_of, shares = unit_map(channels, int(model.get_layer(conv_name).filters), rng)
            model.get_layer(conv_name).set_weights([kernel[..., copies_of], bias[copies_of]])
            model.get_layer(bn_name).set_weights([w[copies_of] for w in donor.get_layer(bn_name).get_weights()])
            done += [conv_name, bn_name]
        # Flatten orders features (row, column, channel), channel fastest: split the channel axis.
        kernel, bias = donor.get_layer("dense").get_weights()
        kernel = kernel.reshape(-1, channels, kernel.shape[-1])
        kernel = (kernel[:, copies_of, :] * shares[np.newaxis, :, np.newaxis]).reshape(-1, kernel.shape[-1])
        copies_of, shares = unit_map(kernel.shape[-1], int(model.get_layer("dense").units), rng)
        model.get_layer("dense").set_weights([kernel[:, copies_of], bias[copies_of]])
        model.get_layer("dense_bn").set_weights([w[copies_of] for w in donor.get_layer("dense_bn").get_weights()])
        done += ["dense", "dense_bn"]
    except ValueError as e:  # a missing layer, or set_weights refusing a shape
        raise ConfigError(f"cannot widen {donor.name} into {model.name}: {e}") from e
    donor_heads = {layer.name for layer in donor.layers} & set(TASK_NAMES)
    for task in (layer.name for layer in model.layers if layer.name in donor_heads):
        kernel, bias = donor.get_layer(task).get_weights()
        model.get_layer(task).set_weights([kernel[copies_of] * shares[:, np.newaxis], bias])
        done.append(task)
    return done
