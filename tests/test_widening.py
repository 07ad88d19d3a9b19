"""Widening a trained model (`fer_model.widening`): the wider model predicts what the narrower one did."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fer_model.errors import ConfigError
from fer_model.model import SILENCED_BIAS, ModelConfig, build_model, silence_classes
from fer_model.widening import unit_map, widen_into

keras = pytest.importorskip("keras")


def _trained_looking(config: ModelConfig, seed: int) -> keras.Model:
    """A model whose BatchNorm layers hold non-trivial statistics, as a trained one would."""
    keras.utils.set_random_seed(seed)
    model = build_model(config)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                               rng.normal(0, 0.2, beta.shape).astype(np.float32),
                               rng.normal(0, 0.3, mean.shape).astype(np.float32),
                               rng.uniform(0.5, 2.0, variance.shape).astype(np.float32)])
    return model


def _faces(n: int = 16) -> np.ndarray:
    return np.random.default_rng(3).uniform(0, 255, size=(n, 50, 50, 1)).astype(np.float32)


@pytest.mark.parametrize("width", [0.5, 0.375], ids=["double", "uneven"])
def test_widened_model_predicts_what_the_narrow_one_did(width) -> None:
    donor = _trained_looking(ModelConfig(width=0.25), seed=0)
    keras.utils.set_random_seed(1)
    model = build_model(ModelConfig(width=width, augment=True))
    before = model.predict_on_batch(_faces())["emotion"]
    assert len(widen_into(model, donor)) == 18  # 6 conv + 6 BN + dense + dense BN + 4 heads
    wide, narrow = model.predict_on_batch(_faces()), donor.predict_on_batch(_faces())
    for task in narrow:
        np.testing.assert_allclose(wide[task], narrow[task], atol=1e-5)
    assert np.abs(before - narrow["emotion"]).max() > 1e-3  # the two models did differ before
    assert model.get_layer("block3_conv2").filters == round(256 * width)


def test_unit_map_keeps_every_unit_and_splits_its_weight_exactly() -> None:
    copies_of, shares = unit_map(5, 12, np.random.default_rng(0))
    np.testing.assert_array_equal(copies_of[:5], np.arange(5))
    assert set(copies_of[5:]) <= set(range(5))
    np.testing.assert_allclose(np.bincount(copies_of, weights=shares), np.ones(5), rtol=1e-12)
    repeated = np.bincount(copies_of)[copies_of] > 1
    assert np.unique(np.round(shares[repeated], 9)).size > 1  # uneven shares: copies learn apart
    with pytest.raises(ConfigError, match="cannot narrow a layer from 5 to 4"):
        unit_map(5, 4, np.random.default_rng(0))


def test_copies_learn_apart_after_a_training_step() -> None:
    # Plain SGD: its step is the gradient itself, which the uneven shares make differ between copies.
    no_dropout = (0.0, 0.0, 0.0, 0.0)  # so only the uneven shares can tell the copies apart
    donor = _trained_looking(ModelConfig(width=0.25, tasks=("emotion",), dropout=no_dropout), seed=0)
    model = build_model(ModelConfig(width=0.5, tasks=("emotion",), dropout=no_dropout))
    widen_into(model, donor)
    kernel = model.get_layer("block1_conv1").get_weights()[0]
    # Unit 16 is the first extra one: the copy of whichever original unit has the same filter.
    copy = 16
    original = next(u for u in range(16) if np.array_equal(kernel[..., u], kernel[..., copy]))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    model.fit(_faces(), {"emotion": np.arange(16) % 7}, batch_size=16, epochs=1, verbose=0)
    kernel = model.get_layer("block1_conv1").get_weights()[0]
    assert np.abs(kernel[..., original] - kernel[..., copy]).max() > 1e-6


def test_warm_start_widens_a_narrower_model_file(tmp_path, caplog) -> None:
    from fer_model.warm_start import copy_matching_weights

    donor = _trained_looking(ModelConfig(width=0.25), seed=0)
    silence_classes(donor, {"gender": ["unsure"]})
    donor.save(tmp_path / "model.keras")
    model = build_model(ModelConfig(width=0.5))
    with caplog.at_level(logging.INFO, logger="fer_model.warm_start"):
        copied = copy_matching_weights(model, tmp_path)
    assert {"block1_conv1", "dense_bn", "emotion", "gender"} <= set(copied)
    assert "18 of 18 layers with weights widened" in caplog.text
    assert donor.get_layer("gender").get_weights()[1][2] == SILENCED_BIAS
    assert model.get_layer("gender").get_weights()[1][2] == 0.0  # unsilenced: the new run may learn it
    np.testing.assert_allclose(model.predict_on_batch(_faces())["emotion"],
                               donor.predict_on_batch(_faces())["emotion"], atol=1e-5)


def test_widening_refuses_a_wider_donor_layer() -> None:
    donor = build_model(ModelConfig(width=0.5, tasks=("emotion",)))
    model = build_model(ModelConfig(width=0.25, tasks=("emotion",)))
    with pytest.raises(ConfigError, match="cannot narrow a layer from 32 to 16"):
        widen_into(model, donor)


def test_warm_start_refuses_a_wider_model_file(tmp_path) -> None:
    """Before, a wider donor copied no layer and the run started from scratch without a word."""
    from fer_model.warm_start import copy_matching_weights

    build_model(ModelConfig(width=0.5)).save(tmp_path / "model.keras")
    with pytest.raises(ConfigError, match="come from a wider model than this run's"):
        copy_matching_weights(build_model(ModelConfig(width=0.25)), tmp_path)
