"""The paper's CNN: config validation, architecture, dtypes, augmentation, other backends."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fer_model.errors import ConfigError
from fer_model.model import INPUT_NAME, ModelConfig, build_model
from fer_model.tasks import TASK_NAMES, get_task

keras = pytest.importorskip("keras")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"width": -1}, r"`width` must be > 0, got -1"),
        ({"width": 0}, r"`width` must be > 0, got 0"),
        ({"tasks": ()}, r"`tasks` must name at least one"),
        ({"tasks": ("emotion", "mood")}, r"unknown task\(s\) \['mood'\]"),
        ({"tasks": "emotion"}, r"`tasks` must be a sequence of task names"),
        ({"tasks": ("age", "age")}, r"`tasks` has duplicates"),
        ({"image_size": 4}, r"`image_size` must be an int >= 8, got 4"),
        ({"dropout": (0.5, 0.5)}, r"`dropout` must have 4 rates"),
        ({"dropout": (0.5, 0.5, 1.0, 0.1)}, r"`dropout` rates must be in \[0, 1\)"),
        ({"l2": -0.1}, r"`l2` must be None or a finite value >= 0"),
        ({"augment": "yes"}, r"`augment` must be a bool"),
    ],
)
def test_model_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ModelConfig(**kwargs)


def test_model_config_puts_tasks_in_canonical_order() -> None:
    assert ModelConfig(tasks=["age", "emotion"]).tasks == ("emotion", "age")
    assert ModelConfig(tasks=("age", "emotion")) == ModelConfig(tasks=("emotion", "age"))


def test_paper_width_architecture() -> None:
    model = build_model(ModelConfig())
    assert [t.name for t in model.inputs] == [INPUT_NAME]
    assert tuple(model.inputs[0].shape) == (None, 50, 50, 1)
    assert isinstance(model.get_layer("rescale"), keras.layers.Rescaling)
    assert model.get_layer("rescale").scale == pytest.approx(1 / 255)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size) for c in convs] == [
        (64, (5, 5)), (64, (5, 5)), (128, (3, 3)), (128, (3, 3)), (256, (3, 3)), (256, (3, 3)),
    ]  # fmt: skip
    assert all(c.padding == "same" for c in convs)
    drops = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert drops == pytest.approx([0.6, 0.5, 0.4, 0.4])
    assert model.get_layer("dense").units == 128
    for task in TASK_NAMES:
        head = model.get_layer(task)
        assert head.units == get_task(task).num_classes


def test_width_scales_layers_and_emotion_only_model_has_one_head() -> None:
    model = build_model(ModelConfig(width=0.25, tasks=("emotion",)))
    convs = [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs == [16, 16, 32, 32, 64, 64]
    assert model.get_layer("dense").units == 32
    outputs = model(np.zeros((2, 50, 50, 1), dtype="float32"))
    assert set(outputs) == {"emotion"}


def test_forward_pass_gives_probabilities_for_uint8_pixels() -> None:
    model = build_model(ModelConfig(width=0.25))
    images = np.random.default_rng(0).integers(0, 256, size=(3, 50, 50, 1)).astype(np.uint8)
    out = model.predict(images, verbose=0)
    assert set(out) == set(TASK_NAMES)
    for task, probs in out.items():
        assert probs.shape == (3, get_task(task).num_classes)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # Same pixels as float give the same answer: the model takes raw 0..255 values either way.
    again = model.predict(images.astype("float32"), verbose=0)
    np.testing.assert_allclose(again["emotion"], out["emotion"], atol=1e-6)


def test_augmentation_is_active_only_in_training() -> None:
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(width=0.25, tasks=("emotion",), augment=True, dropout=(0.0, 0.0, 0.0, 0.0)))
    assert any(isinstance(layer, keras.layers.RandomRotation) for layer in model.layers)
    images = np.random.default_rng(1).integers(0, 256, size=(4, 50, 50, 1)).astype("float32")
    infer_a = keras.ops.convert_to_numpy(model(images, training=False)["emotion"])
    infer_b = keras.ops.convert_to_numpy(model(images, training=False)["emotion"])
    np.testing.assert_array_equal(infer_a, infer_b)
    # Training mode with augmentation must see different images (no dropout to blame here); batch-norm
    # uses batch statistics in training, so compare two training calls with each other.
    train_a = keras.ops.convert_to_numpy(model(images, training=True)["emotion"])
    train_b = keras.ops.convert_to_numpy(model(images, training=True)["emotion"])
    assert np.abs(train_a - train_b).max() > 1e-6


def test_heads_output_float32_under_mixed_precision() -> None:
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(ModelConfig(width=0.25, tasks=("emotion", "gender")))
        assert model.get_layer("block1_conv1").compute_dtype == "float16"
        out = model(np.zeros((1, 50, 50, 1), dtype="float32"))
        assert all(keras.backend.standardize_dtype(v.dtype) == "float32" for v in out.values())
    finally:
        keras.mixed_precision.set_global_policy(previous)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_builds_and_runs_under_another_backend(backend: str) -> None:
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed in this venv (not a project dependency)")
    code = textwrap.dedent(
        f"""
        import numpy as np
        import keras
        from fer_model.model import ModelConfig, build_model
        assert keras.backend.backend() == "{backend}"
        out = build_model(ModelConfig(width=0.25)).predict(np.zeros((2, 50, 50, 1), "uint8"), verbose=0)
        print(sorted(out), [v.shape for v in out.values()])
        """
    )
    env = {**os.environ, "KERAS_BACKEND": backend}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "['age', 'emotion', 'gender', 'race']" in proc.stdout


def test_silence_classes_names_a_missing_head() -> None:
    from fer_model.model import silence_classes

    model = build_model(ModelConfig(width=0.25, tasks=("emotion",)))
    with pytest.raises(ConfigError, match="no 'gender' head"):
        silence_classes(model, {"gender": ["unsure"]})
