"""Model artifact v1: contents, SavedModel parity, fresh-process reload, config reader errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fer_model.errors import ArtifactError
from fer_model.model_artifact import (
    CONFIG_FILE,
    FORMAT_NAME,
    KERAS_FILE,
    SAVED_MODEL_DIR,
    load_model_artifact,
    read_model_config,
    save_model_artifact,
)
from fer_model.tasks import TASK_NAMES, TASKS

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(6, 50, 50, 1)).astype(np.uint8)


def test_artifact_contents_and_config(tiny_model_dir: Path) -> None:
    for name in (KERAS_FILE, CONFIG_FILE, "history.json", f"{SAVED_MODEL_DIR}/saved_model.pb"):
        assert (tiny_model_dir / name).is_file(), name
    assert not [p for p in tiny_model_dir.parent.iterdir() if p.name.startswith(".")], "temp folder left behind"
    config = read_model_config(tiny_model_dir)
    assert config.format == FORMAT_NAME and config.format_version == 1
    assert config.tasks == {t.name: t.classes for t in TASKS}
    assert config.input_size == 50
    assert config.model["width"] == 0.25 and config.model["tasks"] == list(TASK_NAMES)
    assert config.loss_weights == {"emotion": 2.0, "gender": 0.1, "race": 1.5, "age": 4.0}
    assert config.dataset_manifest_sha256 is not None and len(config.dataset_manifest_sha256) == 64
    # Each split of the training dataset by its faces and labels (test_evaluation checks the values).
    assert sorted(config.dataset_split_sha256 or {}) == ["test", "train", "validation"]
    assert config.alignment, "alignment settings must travel with the model for serving"
    history = json.loads((tiny_model_dir / "history.json").read_text())
    best = config.best_epoch
    assert best == int(np.argmax(history["val_emotion_accuracy"]))
    assert config.validation["val_emotion_accuracy"] == history["val_emotion_accuracy"][best]
    assert config.saved_model == SAVED_MODEL_DIR
    # The file on disk is exactly what the typed config writes back.
    assert config.to_dict() == json.loads((tiny_model_dir / CONFIG_FILE).read_text())


def test_saved_model_matches_keras_model(tiny_model_dir: Path, images: np.ndarray) -> None:
    artifact = load_model_artifact(tiny_model_dir)
    expected = artifact.model.predict(images, verbose=0)
    serving = tf.saved_model.load(str(tiny_model_dir / SAVED_MODEL_DIR)).signatures["serving_default"]
    input_spec = serving.structured_input_signature[1]["image"]
    assert input_spec.dtype == tf.uint8 and input_spec.shape.as_list() == [None, 50, 50, 1]
    got = serving(image=tf.constant(images))
    assert set(got) == set(TASK_NAMES)
    for task in TASK_NAMES:
        np.testing.assert_allclose(got[task].numpy(), expected[task], atol=1e-5)


def test_model_keras_reloads_in_a_fresh_process(tiny_model_dir: Path, images: np.ndarray, tmp_path: Path) -> None:
    # Plain Keras, no fer_model import, no custom_objects: the file must be self-contained.
    np.save(tmp_path / "x.npy", images)
    code = textwrap.dedent(
        f"""
        import numpy as np, keras
        model = keras.saving.load_model({str(tiny_model_dir / KERAS_FILE)!r})
        out = model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0)
        np.savez({str(tmp_path / "out.npz")!r}, **out)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = load_model_artifact(tiny_model_dir).model.predict(images, verbose=0)
    with np.load(tmp_path / "out.npz") as got:
        for task in TASK_NAMES:
            np.testing.assert_allclose(got[task], expected[task], atol=1e-6)


def test_read_model_config_imports_no_tensorflow(tiny_model_dir: Path) -> None:
    code = (
        "import sys; from fer_model.model_artifact import read_model_config; "
        f"c = read_model_config({str(tiny_model_dir)!r}); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'heavy import'; print(c.format)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == FORMAT_NAME


def _copy_config_only(src: Path, dst: Path, **changes: object) -> Path:
    dst.mkdir()
    config = json.loads((src / CONFIG_FILE).read_text())
    config.update(changes)
    (dst / CONFIG_FILE).write_text(json.dumps(config))
    return dst


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"format_version": 2}, r"model format version 2, this fer-mtl reads version 1; re-train"),
        ({"format": "something-else"}, r"is not a fer-mtl-model artifact \(format='something-else'\)"),
        ({"tasks": {}}, r"`tasks` must be a non-empty mapping"),
    ],
)
def test_read_model_config_rejects_other_formats(tiny_model_dir: Path, tmp_path: Path, changes, match) -> None:
    with pytest.raises(ArtifactError, match=match):
        read_model_config(_copy_config_only(tiny_model_dir, tmp_path / "m", **changes))


def test_read_model_config_error_paths(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist or is not a folder"):
        read_model_config(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="config.json is missing"):
        read_model_config(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ArtifactError, match="cannot be parsed"):
        read_model_config(tmp_path / "bad")


def test_load_model_artifact_needs_model_keras(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="model.keras is missing"):
        load_model_artifact(_copy_config_only(tiny_model_dir, tmp_path / "m"))


def test_save_round_trip_replaces_an_existing_folder(tiny_model_dir: Path, tmp_path: Path, images) -> None:
    from fer_model.model import ModelConfig
    from fer_model.training import TrainConfig

    source = load_model_artifact(tiny_model_dir)
    out = tmp_path / "model"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    history = {"loss": [2.0, 1.0], "val_emotion_accuracy": [0.2, 0.5]}
    path = save_model_artifact(
        out,
        model=source.model,
        model_config=ModelConfig(width=0.25),
        train_config=TrainConfig(epochs=2),
        history=history,
        best_epoch=1,
        dataset_manifest_sha256="f" * 64,
        alignment={"size": 50},
    )
    assert path == out and not (out / "stale.txt").exists()
    loaded = load_model_artifact(out)
    assert loaded.config.validation == {"val_emotion_accuracy": 0.5} and loaded.config.epochs_run == 2
    assert loaded.config.alignment == {"size": 50} and loaded.config.training["epochs"] == 2
    np.testing.assert_allclose(
        loaded.model.predict(images, verbose=0)["age"], source.model.predict(images, verbose=0)["age"], atol=1e-6
    )
    with pytest.raises(ArtifactError, match="`best_epoch` must index the history"):
        save_model_artifact(
            tmp_path / "other", model=source.model, model_config=ModelConfig(width=0.25),
            train_config=TrainConfig(), history=history, best_epoch=2, dataset_manifest_sha256="", alignment={},
        )  # fmt: skip
    shutil.rmtree(out)


def test_silenced_class_stays_silent_in_keras_file_and_saved_model(
    tiny_model_dir: Path, tmp_path: Path, images: np.ndarray
) -> None:
    from fer_model.model import ModelConfig, silence_classes
    from fer_model.training import TrainConfig

    model = load_model_artifact(tiny_model_dir).model
    silence_classes(model, {"gender": ["unsure"]})
    out = save_model_artifact(
        tmp_path / "model", model=model, model_config=ModelConfig(width=0.25), train_config=TrainConfig(epochs=1),
        history={"val_emotion_accuracy": [0.3]}, best_epoch=0, dataset_manifest_sha256="f" * 64, alignment={},
        untrained_classes={"gender": ["unsure"]},
    )  # fmt: skip
    assert read_model_config(out).untrained_classes == {"gender": ("unsure",)}
    reloaded = load_model_artifact(out).model.predict(images, verbose=0)["gender"]
    serving = tf.saved_model.load(str(out / SAVED_MODEL_DIR)).signatures["serving_default"]
    served = serving(image=tf.constant(images))["gender"].numpy()
    for probs in (reloaded, served):
        assert np.all(probs[:, 2] == 0.0)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_model_trained_with_augmentation_saves_without_its_augmentation_layers(
    tmp_path: Path, images: np.ndarray
) -> None:
    # The augmentation layers' seed state once broke the SavedModel export after a whole training run.
    from fer_model.model import ModelConfig, build_model
    from fer_model.training import TrainConfig

    config = ModelConfig(width=0.25, augment=True)
    model = build_model(config)
    out = save_model_artifact(
        tmp_path / "model", model=model, model_config=config, train_config=TrainConfig(epochs=1),
        history={"val_emotion_accuracy": [0.3]}, best_epoch=0, dataset_manifest_sha256="f" * 64, alignment={},
    )  # fmt: skip
    assert read_model_config(out).model["augment"] is True  # the config still says how it was trained
    reloaded = load_model_artifact(out).model
    assert not [layer.name for layer in reloaded.layers if layer.name.startswith("aug_")]
    expected = model.predict(images, verbose=0)
    served = tf.saved_model.load(str(out / SAVED_MODEL_DIR)).signatures["serving_default"](image=tf.constant(images))
    for task in TASK_NAMES:
        np.testing.assert_allclose(reloaded.predict(images, verbose=0)[task], expected[task], atol=1e-6)
        np.testing.assert_allclose(served[task].numpy(), expected[task], atol=1e-5)
