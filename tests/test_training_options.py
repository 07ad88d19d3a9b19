"""Training options beyond the paper's recipe: schedules, SGD, balanced batches, random erasing, flip averaging."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fer_model.batching import BatchPlan, labelled_pools, plan_batches
from fer_model.dataset import Dataset
from fer_model.errors import ConfigError
from fer_model.model import ModelConfig, build_model
from fer_model.records import SPLIT_CODES
from fer_model.tasks import MISSING, TASK_NAMES
from fer_model.training import TrainConfig, fit
from tests._fixtures.models import pattern_images

keras = pytest.importorskip("keras")

PEAK = 1e-2


def _rate_at(optimizer: keras.optimizers.Optimizer, step: int) -> float:
    optimizer.iterations.assign(step)
    return float(np.asarray(optimizer.learning_rate))


# --- schedules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"schedule": "step"}, r"`schedule` must be one of \('plateau', 'cosine', 'onecycle'\)"),
        ({"optimizer": "rmsprop"}, r"`optimizer` must be one of \('adam', 'sgd'\)"),
        ({"weight_decay": -1.0}, r"`weight_decay` must be a finite number >= 0"),
        ({"schedule": "cosine", "epochs": 3, "warmup_epochs": 3}, r"`warmup_epochs` \(3\) must be below `epochs`"),
        ({"balanced_batches": 1}, r"`balanced_batches` must be a bool"),
    ],
)
def test_train_config_rejects_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kwargs)


def test_cosine_warms_up_then_decays_to_zero_at_the_last_step() -> None:
    from fer_model.schedules import build_optimizer

    steps, epochs = 5, 9  # 40 decay steps: the half-way rate falls on step 25
    optimizer = build_optimizer(TrainConfig(epochs=epochs, learning_rate=PEAK, schedule="cosine", warmup_epochs=1),
                                steps_per_epoch=steps)
    optimizer.build([keras.Variable(np.zeros(1, dtype="float32"))])
    assert _rate_at(optimizer, 0) == pytest.approx(PEAK / steps, rel=1e-5)
    assert _rate_at(optimizer, steps - 1) == pytest.approx(PEAK, rel=1e-5)
    assert _rate_at(optimizer, steps) == pytest.approx(PEAK, rel=1e-5)
    middle = steps + (epochs * steps - steps) // 2
    assert _rate_at(optimizer, middle) == pytest.approx(PEAK / 2, rel=1e-4)
    rates = [_rate_at(optimizer, s) for s in range(steps, epochs * steps)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))
    assert rates[-1] < 0.01 * PEAK  # the last of 40 decay steps: 1 - cos(pi / 40) of the way from 0
    assert _rate_at(optimizer, epochs * steps) == pytest.approx(0.0, abs=1e-12)


def test_onecycle_ramps_from_a_fraction_of_the_peak_and_ends_near_zero() -> None:
    from fer_model.schedules import build_optimizer

    optimizer = build_optimizer(TrainConfig(epochs=10, learning_rate=PEAK, schedule="onecycle"), steps_per_epoch=10)
    optimizer.build([keras.Variable(np.zeros(1, dtype="float32"))])
    start = PEAK / 25
    assert _rate_at(optimizer, 0) == pytest.approx(start + (PEAK - start) / 30, rel=1e-5)  # 1 of 30 ramp steps
    assert _rate_at(optimizer, 30) == pytest.approx(PEAK, rel=1e-5)  # 30% of the run ramps up
    assert _rate_at(optimizer, 100) < PEAK * 1e-5


class _RateLog(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def on_train_batch_begin(self, batch: int, logs: object = None) -> None:
        self.rates.append(float(np.asarray(self.model.optimizer.learning_rate)))


def test_fit_follows_the_cosine_schedule_step_by_step(tiny_pattern: Dataset) -> None:
    log = _RateLog()
    config = TrainConfig(epochs=2, batch_size=16, learning_rate=PEAK, schedule="cosine", verbose=0)
    result = fit(tiny_pattern, model_config=ModelConfig(width=0.125), train_config=config, callbacks=[log])
    steps = math.ceil(int(np.sum(tiny_pattern.split == SPLIT_CODES["train"])) / 16)
    total = 2 * steps
    expected = [0.5 * PEAK * (1 + math.cos(math.pi * s / total)) for s in range(total)]
    np.testing.assert_allclose(log.rates, expected, rtol=1e-4, atol=1e-9)
    assert float(np.asarray(result.model.optimizer.learning_rate)) == pytest.approx(0.0, abs=1e-9)
    assert len(result.history["loss"]) == 2  # no plateau callbacks, no floor stopping a decayed run


def test_sgd_with_nesterov_and_weight_decay_trains(tiny_pattern: Dataset) -> None:
    config = TrainConfig(epochs=2, batch_size=16, learning_rate=0.05, optimizer="sgd", weight_decay=5e-4, verbose=0)
    model_config = ModelConfig(width=0.125)
    keras.utils.set_random_seed(config.seed)
    before = build_model(model_config).get_layer("dense").get_weights()[0]
    result = fit(tiny_pattern, model_config=model_config, train_config=config)
    optimizer = result.model.optimizer
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert optimizer.nesterov and optimizer.momentum == pytest.approx(0.9) and optimizer.weight_decay == 5e-4
    assert all(np.isfinite(result.history["loss"]))
    assert not np.allclose(result.model.get_layer("dense").get_weights()[0], before)


# --- balanced batches -------------------------------------------------------------------------


def _two_sources(n_emotion: int, n_demographics: int, *, seed: int) -> dict[str, np.ndarray]:
    """Labels of an emotion-only source followed by a gender/race/age-only one."""
    rng = np.random.default_rng(seed)
    n = n_emotion + n_demographics
    labels = {t: np.full(n, MISSING, dtype=np.int8) for t in TASK_NAMES}
    labels["emotion"][:n_emotion] = rng.integers(0, 7, n_emotion)
    for task, k in (("gender", 2), ("race", 3), ("age", 5)):
        labels[task][n_emotion:] = rng.integers(0, k, n_demographics)
    labels["race"][n_emotion::7] = MISSING  # like UTKFace's faces of other races: still the same source
    return labels


def test_balanced_plan_draws_an_equal_share_from_each_pool() -> None:
    labels = _two_sources(100, 300, seed=0)
    plan = plan_batches(labels, tasks=TASK_NAMES, monitor_task="emotion", batch_size=16, seed=4, balanced=True)
    pools = labelled_pools(labels, TASK_NAMES)
    assert list(pools) == [("emotion",), ("gender", "race", "age")]  # faces without race join their source
    np.testing.assert_array_equal(pools[("gender", "race", "age")], np.arange(100, 400))
    assert plan.steps_per_epoch == math.ceil(100 / 16)  # as many steps as single-task emotion training
    seen_emotion = []
    for step in range(plan.steps_per_epoch):
        batch = plan.indices(epoch=0, step=step)
        assert len(batch) == 16
        assert int(np.sum(batch < 100)) == 8 and int(np.sum(batch >= 100)) == 8
        seen_emotion.extend(batch[batch < 100].tolist())
    # 56 draws from a pool of 100: no face repeats; the plan is a pure function of (seed, epoch, step).
    assert len(set(seen_emotion)) == len(seen_emotion)
    np.testing.assert_array_equal(plan.indices(epoch=1, step=3), plan.indices(epoch=1, step=3))
    assert not np.array_equal(plan.indices(epoch=1, step=0), plan.indices(epoch=2, step=0))


def test_balanced_plan_cycles_a_small_pool_through_every_face() -> None:
    plan = BatchPlan(num_samples=0, batch_size=8, seed=1, pools=[np.arange(5), np.arange(5, 105)], steps_per_epoch=5)
    small = np.concatenate([plan.indices(0, s)[:4] for s in range(5)])  # 20 draws from 5 faces: 4 full passes
    assert sorted(small.tolist()) == sorted(list(range(5)) * 4)


def test_pools_of_a_fully_labelled_source_absorb_partly_labelled_ones() -> None:
    labels = _two_sources(4, 6, seed=1)
    labels["gender"][0] = 1  # one face labelled for everything: every label set is a subset of its
    labels["race"][0] = labels["age"][0] = 0
    labels["emotion"][9] = MISSING
    labels["gender"][9] = labels["race"][9] = labels["age"][9] = MISSING  # unlabelled: dropped
    pools = labelled_pools(labels, TASK_NAMES)
    assert list(pools) == [TASK_NAMES]
    np.testing.assert_array_equal(pools[TASK_NAMES], np.arange(9))


def test_plain_plan_visits_every_sample_once_per_epoch() -> None:
    plan = BatchPlan(num_samples=50, batch_size=16, seed=0)
    epoch = np.concatenate([plan.indices(3, s) for s in range(plan.steps_per_epoch)])
    assert sorted(epoch.tolist()) == list(range(50))


def test_model_learns_with_balanced_batches() -> None:
    n_emotion, n_demo, n_val = 96, 288, 96
    labels = _two_sources(n_emotion + n_val, n_demo, seed=2)
    # Validation: the last n_val emotion-labelled faces; the demographics-only source trains only.
    split = np.full(len(labels["emotion"]), SPLIT_CODES["train"], dtype=np.uint8)
    split[n_emotion:n_emotion + n_val] = SPLIT_CODES["validation"]
    dataset = Dataset(images=pattern_images(labels, seed=5), labels=labels, split=split,
                      manifest={"_sha256": "0" * 64})
    config = TrainConfig(epochs=6, batch_size=16, learning_rate=1e-3, balanced_batches=True,
                         loss_weights={t: 1.0 for t in TASK_NAMES}, verbose=0)
    result = fit(dataset, model_config=ModelConfig(width=0.25), train_config=config)
    accuracy = max(result.history["val_emotion_accuracy"])
    assert accuracy > 1 / 7 + 0.25, f"emotion validation accuracy {accuracy:.2f} vs chance {1 / 7:.2f}"


# --- augmentation and flip averaging --------------------------------------------------------------


def test_random_erasing_changes_training_inputs_only() -> None:
    with pytest.raises(ConfigError, match=r"`random_erasing` must be a probability in \[0, 1\]"):
        ModelConfig(random_erasing=1.5)
    model = build_model(ModelConfig(width=0.125, random_erasing=1.0))
    layer = model.get_layer("aug_erase")
    faces = np.full((4, 50, 50, 1), 0.5, dtype="float32")
    erased = np.asarray(layer(faces, training=True))
    assert np.all(np.any(np.abs(erased - 0.5) > 1e-6, axis=(1, 2, 3)))  # every face got a patch
    np.testing.assert_array_equal(np.asarray(layer(faces, training=False)), faces)
    reloaded = keras.Model.from_config(model.get_config())
    assert reloaded.get_layer("aug_erase").get_config()["factor"] == layer.get_config()["factor"]


def test_flip_averaging_averages_a_face_and_its_mirror() -> None:
    from fer_model.predict import predict_probabilities

    model = build_model(ModelConfig(width=0.125, tasks=("emotion",)))
    faces = np.random.default_rng(0).integers(0, 255, (3, 50, 50, 1)).astype(np.uint8)
    plain = predict_probabilities(model, faces, tasks=("emotion",))["emotion"]
    mirrored = predict_probabilities(model, faces[:, :, ::-1], tasks=("emotion",))["emotion"]
    averaged = predict_probabilities(model, faces, tasks=("emotion",), flip_average=True)["emotion"]
    np.testing.assert_allclose(averaged, (plain + mirrored) / 2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(plain, mirrored)


@pytest.fixture(scope="module")
def tiny_pattern() -> Dataset:
    from tests._fixtures.models import pattern_dataset

    return pattern_dataset(n_train=64, n_val=32, seed=1)


def test_warm_start_copies_matching_layers_and_unsilences_classes(tmp_path) -> None:
    from fer_model.model import SILENCED_BIAS, silence_classes
    from fer_model.warm_start import copy_matching_weights

    keras.utils.set_random_seed(0)
    donor = build_model(ModelConfig(width=0.125))
    silence_classes(donor, {"gender": ["unsure"]})
    donor.save(tmp_path / "model.keras")
    keras.utils.set_random_seed(1)
    model = build_model(ModelConfig(width=0.125, tasks=("emotion", "gender")))
    copied = copy_matching_weights(model, tmp_path)  # an artifact folder holding model.keras
    assert {"block1_conv1", "dense", "emotion", "gender"} <= set(copied)
    np.testing.assert_array_equal(model.get_layer("block3_conv2").get_weights()[0],
                                  donor.get_layer("block3_conv2").get_weights()[0])
    bias = model.get_layer("gender").get_weights()[1]
    assert donor.get_layer("gender").get_weights()[1][2] == SILENCED_BIAS and bias[2] == 0.0
    with pytest.raises(ConfigError, match="initial weights .* not found"):
        copy_matching_weights(model, tmp_path / "missing.keras")
