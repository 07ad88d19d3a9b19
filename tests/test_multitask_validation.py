"""Validation and the saved model normalise with the BatchNorm statistics of the network as trained.

Issue 13's ablation: after epoch 1 every multi-task run on real faces scored 2-10% validation emotion
accuracy (chance 14%) because the BN moving averages still held much of their initial (0, 1) and of
the first steps' activations. These tests use a small two-source dataset whose sources have different
pixel statistics, like FER2013 (emotion only) and UTKFace (gender/race/age only).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fer_model.dataset import Dataset
from fer_model.errors import ConfigError
from fer_model.model import ModelConfig, build_model, recalibrate_batch_norm
from fer_model.tasks import MISSING
from fer_model.training import TrainConfig, fit
from tests._fixtures.models import pattern_dataset


def _two_sources(seed: int = 0) -> Dataset:
    """First half: emotion labels only; second half: gender/race/age only, at lower contrast and brighter."""
    base = pattern_dataset(n_train=256, n_val=96, missing_rate=0.0, seed=seed)
    n = len(base.split)
    second = np.arange(n) % 2 == 1
    labels = {t: v.copy() for t, v in base.labels.items()}
    labels["emotion"][second] = MISSING
    for task in ("gender", "race", "age"):
        labels[task][~second] = MISSING
    images = base.images.copy()
    images[second] = (images[second].astype(np.float32) * 0.5 + 100).astype(np.uint8)
    return dataclasses.replace(base, images=images, labels=labels)


def _normalised_stats(model, images: np.ndarray) -> dict[str, tuple[float, float]]:
    """BN layer -> (median |channel mean|, median channel variance) of its output on `images`, inference mode."""
    import keras

    out = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            values = keras.ops.convert_to_numpy(keras.Model(model.input, layer.output)(images, training=False))
            values = values.reshape(-1, values.shape[-1])
            out[layer.name] = (float(np.median(np.abs(values.mean(0)))), float(np.median(values.var(0))))
    return out


def test_recalibration_normalises_each_layer_to_zero_mean_unit_variance() -> None:
    model = build_model(ModelConfig(width=0.25))
    images = _two_sources().images[:64, ..., None].astype(np.float32)
    recalibrate_batch_norm(model, images, batch_size=24)  # uneven chunks: statistics cover every image
    # Fresh BN layers have gamma 1 and beta 0, so their outputs must be standardised per channel
    # (variance v / (v + epsilon) with Keras' epsilon 1e-3, hence not exactly 1).
    for name, (mean, variance) in _normalised_stats(model, images).items():
        assert mean < 1e-3, name
        assert 0.9 < variance < 1.0 + 1e-3, name


def test_recalibration_needs_images() -> None:
    with pytest.raises(ConfigError, match="at least one image"):
        recalibrate_batch_norm(build_model(ModelConfig(width=0.25)), np.zeros((0, 50, 50, 1), np.float32))


@pytest.mark.parametrize("samples", [1024, 0])
def test_fit_validates_with_the_trained_networks_statistics(samples: int) -> None:
    dataset = _two_sources()
    result = fit(
        dataset,
        model_config=ModelConfig(width=0.25),
        train_config=TrainConfig(epochs=1, batch_size=32, learning_rate=1e-3, verbose=0,
                                 bn_recalibration_samples=samples),
    )
    train_images = dataset.subset("train")[0][..., None].astype(np.float32)
    stats = _normalised_stats(result.model, train_images)
    # 8 steps of momentum 0.99 leave the moving averages ~92% at their initial (0, 1): the early
    # layers' outputs then have variance far from 1 on the very faces the model was trained on.
    standardised = all(mean < 0.05 and 0.8 < variance < 1.05 for mean, variance in stats.values())
    assert standardised == bool(samples), stats
    # The epoch's logged validation accuracy is the returned model's, so early stopping ranked it right.
    images, labels = dataset.subset("validation")
    scores = result.model.evaluate(images[..., None], {t: v.astype("int32") for t, v in labels.items()},
                                   batch_size=32, verbose=0, return_dict=True)
    assert scores["emotion_accuracy"] == pytest.approx(result.history["val_emotion_accuracy"][0], abs=1e-6)
