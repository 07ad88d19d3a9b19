"""Masked weighted multi-task training: loss and metric maths, callbacks, learnability, CLI."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from fer_model.dataset import Dataset, write_dataset
from fer_model.errors import ConfigError
from fer_model.model import ModelConfig, build_model
from fer_model.progress import format_duration
from fer_model.records import SPLIT_CODES
from fer_model.tasks import MISSING, TASK_NAMES, get_task
from fer_model.training import TrainConfig, emotion_class_weights, fit, untrained_classes
from tests._fixtures.models import pattern_dataset

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

EQUAL_WEIGHTS = {t: 1.0 for t in TASK_NAMES}


# --- TrainConfig validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, r"`epochs` must be an int >= 1, got 0"),
        ({"batch_size": -1}, r"`batch_size` must be an int >= 1"),
        ({"learning_rate": 0.0}, r"`learning_rate` must be a finite number > 0"),
        ({"min_lr": float("nan")}, r"`min_lr`"),
        ({"reduce_lr_factor": 1.0}, r"`reduce_lr_factor` must be in \(0, 1\)"),
        ({"reduce_lr_patience": -1}, r"`reduce_lr_patience` must be an int >= 0"),
        ({"label_smoothing": 1.0}, r"`label_smoothing` must be in \[0, 1\)"),
        ({"loss_weights": {"emotion": -1.0}}, r"`loss_weights\['emotion'\]` must be a finite number >= 0"),
        ({"loss_weights": {"mood": 1.0}}, r"unknown task 'mood'"),
        ({"verbose": 3}, r"`verbose` must be 0, 1 or 2"),
        ({"mixed_precision": "yes"}, r"`mixed_precision` must be a bool"),
        ({"time_limit_s": -1.0}, r"`time_limit_s` must be a finite number >= 0"),
    ],
)
def test_train_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kwargs)


def test_train_config_defaults_and_private_weights_copy() -> None:
    weights = {"emotion": 2.0, "age": 4.0}
    config = TrainConfig(loss_weights=weights)
    weights["emotion"] = 99.0
    assert config.loss_weights == {"emotion": 2.0, "age": 4.0}
    assert config.weights_for(("emotion", "gender")) == {"emotion": 2.0, "gender": 1.0}
    default = TrainConfig()
    assert default.loss_weights == {"emotion": 2.0, "gender": 0.1, "race": 1.5, "age": 4.0}
    # Early stopping must outlast two LR reductions, or ReduceLROnPlateau never gets to act.
    assert default.early_stopping_patience > 2 * default.reduce_lr_patience
    assert default.jit_compile is False


def test_jit_compile_flag_reaches_the_tensorflow_train_step() -> None:
    from fer_model.training import compile_model

    model = build_model(ModelConfig(width=0.25, tasks=("emotion",)))
    for flag in (False, True):
        compile_model(model, model_config=ModelConfig(width=0.25, tasks=("emotion",)),
                      train_config=TrainConfig(jit_compile=flag), class_weights=None)  # fmt: skip
        assert model.jit_compile is flag


# --- masked loss and metric -------------------------------------------------------------------


def _emotion_model() -> keras.Model:
    keras.utils.set_random_seed(1)
    return build_model(ModelConfig(width=0.25, tasks=("emotion",), dropout=(0.0, 0.0, 0.0, 0.0)))


def _head_gradient(model: keras.Model, images: np.ndarray, labels: np.ndarray, **loss_kwargs) -> tuple:
    from fer_model._keras_objects import MaskedSparseCrossentropy

    loss_fn = MaskedSparseCrossentropy(**loss_kwargs)
    kernel = model.get_layer("emotion").kernel
    with tf.GradientTape() as tape:
        # training=False: batch-norm uses moving statistics, so one sample cannot shift another's features.
        probs = model(images.astype("float32"), training=False)["emotion"]
        loss = loss_fn(labels, probs)
    return float(loss), tape.gradient(loss, kernel).numpy(), probs.numpy()


def test_unlabelled_sample_changes_no_head_gradient() -> None:
    model = _emotion_model()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, 50, 50, 1)).astype(np.uint8)
    labels = np.array([0, 1, 2, 3, MISSING, 5, 6, 0])
    altered = images.copy()
    altered[4] = 255 - altered[4]  # a different face for the unlabelled sample

    loss_a, grad_a, probs = _head_gradient(model, images, labels)
    loss_b, grad_b, _ = _head_gradient(model, altered, labels)
    np.testing.assert_allclose(grad_a, grad_b, atol=1e-7)
    assert loss_a == pytest.approx(loss_b, abs=1e-7)
    # The loss is the mean cross-entropy over the 7 labelled samples only.
    keep = labels != MISSING
    expected = -np.log(probs[keep, labels[keep]]).mean()
    assert loss_a == pytest.approx(expected, rel=1e-5)

    # Control: once that sample is labelled, its features do move the gradient.
    labels[4] = 4
    _, grad_c, _ = _head_gradient(model, images, labels)
    _, grad_d, _ = _head_gradient(model, altered, labels)
    assert np.abs(grad_c - grad_d).max() > 1e-6


def test_all_unlabelled_batch_has_zero_loss_and_gradient() -> None:
    model = _emotion_model()
    images = np.random.default_rng(1).integers(0, 256, size=(4, 50, 50, 1)).astype(np.uint8)
    loss, grad, _ = _head_gradient(model, images, np.full(4, MISSING))
    assert loss == 0.0
    assert np.isfinite(grad).all() and not grad.any()


def test_label_smoothing_and_class_weights_follow_their_formulas() -> None:
    from fer_model._keras_objects import MaskedSparseCrossentropy

    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]], dtype="float32")
    labels = np.array([0, MISSING, 2])
    smooth = float(MaskedSparseCrossentropy(label_smoothing=0.3)(labels, probs))
    target = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])
    expected = -(target * np.log(probs[[0, 2]])).sum(axis=1).mean()
    assert smooth == pytest.approx(expected, rel=1e-5)

    weighted = float(MaskedSparseCrossentropy(class_weights=[2.0, 1.0, 0.5])(labels, probs))
    assert weighted == pytest.approx((2.0 * -np.log(0.7) + 0.5 * -np.log(0.4)) / 2, rel=1e-5)


def test_masked_accuracy_ignores_unlabelled_samples() -> None:
    from fer_model._keras_objects import MaskedAccuracy

    metric = MaskedAccuracy()
    probs = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    metric.update_state(np.array([0, 2, MISSING, MISSING]), probs)
    assert float(metric.result()) == pytest.approx(0.5)
    metric.reset_state()
    metric.update_state(np.array([MISSING, MISSING]), probs[:2])
    assert float(metric.result()) == 0.0


def test_emotion_class_weights_are_inverse_frequency() -> None:
    labels = np.array([0, 0, 0, 1, MISSING, MISSING])
    weights = emotion_class_weights(labels)
    assert len(weights) == get_task("emotion").num_classes
    assert weights[0] == pytest.approx(4 / (7 * 3)) and weights[1] == pytest.approx(4 / 7)
    assert weights[2:] == [0.0] * 5


# --- fit ------------------------------------------------------------------------------------


def test_small_model_learns_every_task() -> None:
    result = fit(
        pattern_dataset(),
        model_config=ModelConfig(width=0.25),
        train_config=TrainConfig(epochs=6, learning_rate=1e-3, loss_weights=EQUAL_WEIGHTS, verbose=0),
    )
    for task in TASK_NAMES:
        accuracy = result.history[f"val_{task}_accuracy"][result.best_epoch]
        chance = 1 / get_task(task).num_classes
        assert accuracy > chance + 0.25, f"{task}: {accuracy:.2f} vs chance {chance:.2f}"
    assert result.best_epoch == int(np.argmax(result.history["val_emotion_accuracy"]))


def test_zero_loss_weight_freezes_its_head() -> None:
    captured = {}

    class Snapshot(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            captured.update({t: self.model.get_layer(t).kernel.numpy().copy() for t in ("gender", "emotion")})

    weights = {**EQUAL_WEIGHTS, "gender": 0.0}
    result = fit(
        pattern_dataset(n_train=96, n_val=32),
        model_config=ModelConfig(width=0.25),
        train_config=TrainConfig(epochs=2, learning_rate=1e-3, loss_weights=weights, verbose=0),
        callbacks=[Snapshot()],
    )
    np.testing.assert_array_equal(result.model.get_layer("gender").kernel.numpy(), captured["gender"])
    assert np.abs(result.model.get_layer("emotion").kernel.numpy() - captured["emotion"]).max() > 1e-4


def _relabelled(dataset: Dataset, task: str, split: str, new_labels: np.ndarray) -> Dataset:
    labels = {t: np.array(v) for t, v in dataset.labels.items()}
    labels[task][dataset.indices(split)] = new_labels
    return dataclasses.replace(dataset, labels=labels)


def test_early_stopping_restores_the_best_epoch_weights() -> None:
    # Validation labels are shifted by one class: the better the model learns train, the worse it scores.
    base = pattern_dataset(missing_rate=0.0, seed=3)
    val_idx = base.indices("validation")
    dataset = _relabelled(base, "emotion", "validation", (base.labels["emotion"][val_idx] + 1) % 7)
    result = fit(
        dataset,
        model_config=ModelConfig(width=0.25, tasks=("emotion",)),
        train_config=TrainConfig(epochs=5, learning_rate=1e-3, early_stopping_patience=2, verbose=0),
    )
    accuracy = result.history["val_emotion_accuracy"]
    assert result.best_epoch == int(np.argmax(accuracy))
    assert accuracy[result.best_epoch] > accuracy[-1]  # the scenario really degrades
    images, labels = dataset.subset("validation")
    scores = result.model.evaluate(
        images[..., None], {"emotion": labels["emotion"].astype("int32")}, batch_size=32, verbose=0, return_dict=True
    )
    assert scores["emotion_accuracy"] == pytest.approx(accuracy[result.best_epoch], abs=1e-6)


def test_learning_rate_floor_stops_training() -> None:
    # No validation emotion label: the monitored accuracy stays 0, so every epoch is a plateau.
    base = pattern_dataset(n_train=64, n_val=16, seed=4)
    dataset = _relabelled(base, "emotion", "validation", MISSING)
    config = TrainConfig(
        epochs=20, learning_rate=1e-3, reduce_lr_patience=1, reduce_lr_factor=0.1, min_lr=5e-5,
        early_stopping_patience=20, verbose=0,
    )  # fmt: skip
    result = fit(dataset, model_config=ModelConfig(width=0.25, tasks=("emotion",)), train_config=config)
    # 1e-3 -> 1e-4 (after epoch 2) -> 1e-5 (after epoch 3) < 5e-5: stop after 3 of 20 epochs.
    assert len(result.history["loss"]) == 3
    # History logs the rate each epoch ran with; the final reduction happens after the last epoch.
    np.testing.assert_allclose(result.history["learning_rate"], [1e-3, 1e-3, 1e-4], rtol=1e-5)
    assert float(result.model.optimizer.learning_rate.numpy()) == pytest.approx(1e-5, rel=1e-5)


def test_time_limit_stops_after_the_epoch_that_crosses_it() -> None:
    dataset = pattern_dataset(n_train=64, n_val=16, seed=5)
    model_config = ModelConfig(width=0.25, tasks=("emotion",))
    # Any positive budget is crossed within the first epoch, so training stops after it ...
    limited = fit(dataset, model_config=model_config,
                  train_config=TrainConfig(epochs=4, time_limit_s=1e-6, verbose=0))
    assert len(limited.history["loss"]) == 1
    # ... while 0 means no limit: the same run goes on to its epoch count.
    unlimited = fit(dataset, model_config=model_config, train_config=TrainConfig(epochs=2, verbose=0))
    assert len(unlimited.history["loss"]) == 2


def test_untrained_classes_lists_only_tasks_with_some_labels() -> None:
    labels = {
        "gender": np.array([0, 1, MISSING, 1]),  # binary, like UTKFace
        "race": np.full(4, MISSING),  # a task no sample labels: nothing to say about its classes
        "emotion": np.arange(7),
    }
    assert untrained_classes(labels) == {"gender": ["unsure"]}


def test_class_without_a_training_label_is_never_predicted() -> None:
    # Gender labelled male/female only (UTKFace's case): `unsure` must never win, on any face.
    base = pattern_dataset(n_train=96, n_val=32, seed=6)
    train_gender = base.labels["gender"][base.indices("train")]
    dataset = _relabelled(base, "gender", "train", np.where(train_gender == 2, MISSING, train_gender))
    result = fit(
        dataset,
        model_config=ModelConfig(width=0.25, tasks=("emotion", "gender")),
        train_config=TrainConfig(epochs=1, learning_rate=1e-3, verbose=0),
    )
    assert result.untrained_classes == {"gender": ["unsure"]}
    rng = np.random.default_rng(0)
    faces = np.concatenate([dataset.images[..., None], rng.integers(0, 256, (64, 50, 50, 1))]).astype("float32")
    gender = keras.ops.convert_to_numpy(result.model(faces, training=False)["gender"])
    assert np.all(gender[:, 2] == 0.0)
    np.testing.assert_allclose(gender.sum(axis=1), 1.0, rtol=1e-5)
    assert set(np.unique(gender.argmax(axis=1))) <= {0, 1}


def test_validation_loss_is_not_deflated_by_sources_stored_in_blocks() -> None:
    # Validation as `prepare` stores two sources: 96 faces without a gender label, then 32 with one.
    base = pattern_dataset(n_train=64, n_val=128, missing_rate=0.0, seed=8)
    val_gender = base.labels["gender"][base.indices("validation")].copy()
    val_gender[:96] = MISSING
    dataset = _relabelled(base, "gender", "validation", val_gender)
    result = fit(
        dataset,
        model_config=ModelConfig(width=0.25, tasks=("emotion", "gender")),
        train_config=TrainConfig(epochs=1, batch_size=32, learning_rate=1e-3, verbose=0),
    )
    images, labels = dataset.subset("validation")
    labelled = labels["gender"] != MISSING
    probs = result.model.predict(images[..., None], verbose=0)["gender"][labelled]
    true_loss = float(-np.log(probs[np.arange(len(probs)), labels["gender"][labelled]]).mean())
    # In stored order three of four batches would log 0, reporting about a quarter of the true loss.
    assert result.history["val_gender_loss"][0] == pytest.approx(true_loss, rel=0.3)


def test_fit_requires_a_validation_split_and_a_nonzero_weight() -> None:
    dataset = pattern_dataset(n_train=32, n_val=8)
    no_val = dataclasses.replace(dataset, split=np.zeros_like(dataset.split))
    with pytest.raises(ConfigError, match="no 'validation' samples; re-run `fer-mtl prepare`"):
        fit(no_val, model_config=ModelConfig(width=0.25), train_config=TrainConfig(epochs=1))
    with pytest.raises(ConfigError, match="every loss weight .* is 0"):
        fit(
            dataset,
            model_config=ModelConfig(width=0.25, tasks=("gender",)),
            train_config=TrainConfig(epochs=1, loss_weights={"gender": 0.0}),
        )
    with pytest.raises(ConfigError, match="set ModelConfig\\(image_size=50\\)"):
        fit(dataset, model_config=ModelConfig(width=0.25, image_size=48), train_config=TrainConfig(epochs=1))


# --- CLI ------------------------------------------------------------------------------------


def test_cli_train_writes_an_artifact(tmp_path) -> None:
    from fer_cli import main
    from fer_model.model_artifact import read_model_config

    ds = pattern_dataset(n_train=64, n_val=16, seed=5)
    dataset_dir = write_dataset(tmp_path / "ds", images=ds.images, labels=ds.labels, split=ds.split)
    rc = main(
        ["train", "--dataset", str(dataset_dir), "--out", str(tmp_path / "model"), "--epochs", "1",
         "--width", "0.25", "--tasks", "age,emotion", "--loss-weights", "emotion=1,age=3", "--seed", "3"]
    )  # fmt: skip
    assert rc == 0
    config = read_model_config(tmp_path / "model")
    assert list(config.tasks) == ["emotion", "age"]
    assert config.loss_weights == {"emotion": 1.0, "age": 3.0}
    assert config.training["seed"] == 3 and config.training["epochs"] == 1
    assert (SPLIT_CODES["train"], SPLIT_CODES["validation"]) == (0, 1)


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--loss-weights", "foo"], "--loss-weights item 'foo' must be TASK=WEIGHT"),
        (["--loss-weights", "emotion=abc"], "'abc' is not a number"),
        (["--loss-weights", "emotion=-1"], "must be a finite number >= 0"),
        (["--tasks", "emotion,mood"], r"--tasks has unknown task\(s\) \['mood'\]"),
        (["--width", "0"], "`width` must be > 0, got 0"),
        (["--epochs", "0"], "`epochs` must be an int >= 1, got 0"),
    ],
)
def test_cli_train_rejects_bad_flags_in_one_line(tmp_path, capsys, flags: list[str], match: str) -> None:
    import re

    from fer_cli import main

    rc = main(["train", "--dataset", str(tmp_path), "--out", str(tmp_path / "m"), *flags])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and re.search(match, err)


# --- progress lines ---------------------------------------------------------------------------


@pytest.mark.parametrize("verbose", [2, 0])
def test_fit_logs_one_line_per_epoch_unless_silent(caplog: pytest.LogCaptureFixture, verbose: int) -> None:
    caplog.set_level(logging.INFO, logger="fer_model.callbacks")
    dataset = pattern_dataset(n_train=32, n_val=16, seed=6)
    config = TrainConfig(epochs=3, batch_size=16, early_stopping_patience=10, verbose=verbose)
    fit(dataset, model_config=ModelConfig(width=0.25, tasks=("emotion",)), train_config=config)
    lines = [r for r in caplog.records if r.name == "fer_model.callbacks" and hasattr(r, "epoch")]
    if verbose == 0:
        assert lines == []
        return
    assert [(r.epoch, r.epochs) for r in lines] == [(1, 3), (2, 3), (3, 3)]
    assert all(r.seconds >= 0 for r in lines)
    assert "val_emotion_accuracy" in lines[0].getMessage() and "ETA" in lines[0].getMessage()


def test_a_long_epoch_logs_its_steps_every_n_seconds(caplog: pytest.LogCaptureFixture) -> None:
    from fer_model.callbacks import ProgressLog

    caplog.set_level(logging.INFO, logger="fer_model.callbacks")
    now = [0.0]
    log = ProgressLog(every_s=30, clock=lambda: now[0])
    log.set_params({"epochs": 4, "steps": 100})
    log.on_train_begin()
    log.on_epoch_begin(1)
    for batch in range(100):
        now[0] += 1.0  # one step a second: lines after steps 30, 60, 90
        log.on_train_batch_end(batch)
    assert [r.getMessage() for r in caplog.records] == [
        f"epoch 2/4: step {n}/100, 1.00 steps/s, epoch ETA {format_duration(100 - n)}" for n in (30, 60, 90)
    ]
