"""The model artifact (format version 1): one writer, one config reader, one loader.

A folder holding
- model.keras: the Keras 3 model (uncompiled, float32; rescaling inside, so it takes raw pixels),
- saved_model/1/: a TF SavedModel whose `serving_default` signature takes uint8 `image`
  [N, S, S, 1] and returns one probability tensor per task, named by task (TensorFlow backend only),
- config.json: tasks and classes, sizes, alignment, model and training settings, provenance,
- history.json: per-epoch metrics.
It is written under a temporary name and renamed into place, so a reader never sees half of one.
`read_model_config` needs no TensorFlow or Keras, so light code paths can inspect an artifact.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fer_model import __version__
from fer_model._atomic import atomic_folder
from fer_model._keras_file import load_keras_model
from fer_model.artifact_files import (
    CONFIG_FILE,
    HISTORY_FILE,
    KERAS_FILE,
    MODEL_FORMAT_NAME,
    MODEL_FORMAT_VERSION,
    SAVED_MODEL_DIR,
    ModelArtifactConfig,
)
from fer_model.errors import ArtifactError
from fer_model.tasks import get_task

if TYPE_CHECKING:
    import keras

    from fer_model.model import ModelConfig
    from fer_model.training import TrainConfig

logger = logging.getLogger(__name__)

FORMAT_NAME = MODEL_FORMAT_NAME
FORMAT_VERSION = MODEL_FORMAT_VERSION
#: Serialisation formats that run code when read (pickle and what wraps it, legacy Keras HDF5). The
#: writer never puts one in an artifact, so one there means the folder is not what it claims to be.
CODE_CARRYING_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib", ".dill", ".npy", ".npz", ".pt", ".pth", ".h5",
                                    ".hdf5"})


@dataclass(frozen=True)
class ModelArtifact:
    """A loaded model artifact: the Keras model, its parsed config.json and its folder."""

    model: Any
    config: ModelArtifactConfig
    path: Path

    @property
    def tasks(self) -> dict[str, tuple[str, ...]]:
        """{task: class names} for the heads the model has, in head order."""
        return dict(self.config.tasks)


def _inference_copy(model: keras.Model, model_config: ModelConfig) -> keras.Model:
    """A fresh float32, uncompiled copy of `model` with the same weights and no augmentation layers.

    Saving the copy keeps model.keras free of the training-only loss/metric objects (any plain Keras
    loads it), of a mixed-precision dtype policy (float16 inference is slow on CPUs) and of the
    augmentation layers: they are identities at inference, and their random-seed state cannot be
    captured by a SavedModel signature.
    """
    import keras

    from fer_model.model import build_model

    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        copy = build_model(dataclasses.replace(model_config, augment=False))
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    # By layer name: the augmentation layers `model` may have carry seed state, not weights to copy.
    for layer in copy.layers:
        layer.set_weights(model.get_layer(layer.name).get_weights())
    return copy


def export_saved_model(
    model: keras.Model, path: str | os.PathLike[str], *, tasks: Sequence[str], image_size: int
) -> None:
    """Write a TF SavedModel with a `serving_default` signature: uint8 `image` -> {task: probabilities}.

    Needs KERAS_BACKEND=tensorflow.
    """
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 1], tf.uint8, name="image")])
    def serve(image: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = model(tf.cast(image, tf.float32), training=False)
        return {task: tf.identity(outputs[task], name=task) for task in tasks}

    # A plain tf.Module tracks the Keras model's variables, so the graph and weights are saved together.
    module = tf.Module()
    module.model = model
    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})


def save_model_artifact(
    out_dir: str | os.PathLike[str],
    *,
    model: keras.Model,
    model_config: ModelConfig,
    train_config: TrainConfig,
    history: Mapping[str, Sequence[float]],
    best_epoch: int,
    dataset_manifest_sha256: str,
    alignment: Mapping[str, Any],
    untrained_classes: Mapping[str, Sequence[str]] | None = None,
    dataset_split_sha256: Mapping[str, str] | None = None,
) -> Path:
    """Write a model artifact atomically (replacing `out_dir` if it exists) and return its path.

    Args:
        out_dir: Folder to create.
        model: The trained model (best weights restored).
        model_config: The architecture it was built with.
        train_config: The hyper-parameters it was trained with.
        history: Per-epoch metrics (Keras keys).
        best_epoch: 0-based index of the restored epoch in `history`.
        dataset_manifest_sha256: sha256 of the dataset manifest it was trained on.
        alignment: Alignment settings (AlignConfig fields) the dataset was prepared with; serving
            must align faces the same way.
        untrained_classes: task -> classes that had no training label (silenced in `model`).
        dataset_split_sha256: split -> `Dataset.split_sha256` of the training dataset (lets an
            evaluation recognise its held-out split in a rebuilt or taught copy).
    """
    import keras

    lengths = {len(v) for v in history.values()}
    if history and not (0 <= best_epoch < min(lengths)):
        raise ArtifactError(f"`best_epoch` must index the history (0..{min(lengths) - 1}), got {best_epoch}")
    inference_model = _inference_copy(model, model_config)
    backend = keras.backend.backend()
    out = Path(out_dir)
    with atomic_folder(out) as tmp:
        inference_model.save(tmp / KERAS_FILE)
        saved_model: str | None = None
        if backend == "tensorflow":
            export_saved_model(
                inference_model, tmp / SAVED_MODEL_DIR, tasks=model_config.tasks, image_size=model_config.image_size
            )
            saved_model = SAVED_MODEL_DIR
        else:
            logger.warning("KERAS_BACKEND=%s: skipping the TF SavedModel export (needs tensorflow)", backend)
        clean_history = {k: [float(x) for x in v] for k, v in history.items()}
        (tmp / HISTORY_FILE).write_text(json.dumps(clean_history, indent=2) + "\n")
        config = _artifact_config(
            model_config=model_config, train_config=train_config, history=history, best_epoch=best_epoch,
            dataset_manifest_sha256=dataset_manifest_sha256, alignment=alignment, saved_model=saved_model,
            untrained_classes=untrained_classes, dataset_split_sha256=dataset_split_sha256,
        )
        # Written last, config.json records the hash of every other file (checked on load).
        dataclasses.replace(config, sha256=_hash_files(tmp)).write(tmp)
    logger.info("wrote model artifact %s (tasks %s, best epoch %d)", out, ",".join(model_config.tasks), best_epoch + 1)
    return out


def _artifact_config(
    *,
    model_config: ModelConfig,
    train_config: TrainConfig,
    history: Mapping[str, Sequence[float]],
    best_epoch: int,
    dataset_manifest_sha256: str,
    alignment: Mapping[str, Any],
    saved_model: str | None,
    untrained_classes: Mapping[str, Sequence[str]] | None,
    dataset_split_sha256: Mapping[str, str] | None,
) -> ModelArtifactConfig:
    """The config.json of an artifact being written (see `save_model_artifact` for the arguments)."""
    import keras

    return ModelArtifactConfig(
        library_version=__version__,
        keras_version=keras.__version__,
        backend=keras.backend.backend(),
        tasks={t: get_task(t).classes for t in model_config.tasks},
        input_size=model_config.image_size,
        input_name="image",
        alignment=dict(alignment),
        model=model_config.to_dict(),
        training=train_config.to_dict(),
        loss_weights=train_config.weights_for(model_config.tasks),
        dataset_manifest_sha256=dataset_manifest_sha256,
        best_epoch=int(best_epoch),
        epochs_run=max((len(v) for v in history.values()), default=0),
        validation={k: float(v[best_epoch]) for k, v in history.items() if k.startswith("val_")},
        saved_model=saved_model,
        untrained_classes={t: tuple(c) for t, c in (untrained_classes or {}).items()},
        dataset_split_sha256=dict(dataset_split_sha256) if dataset_split_sha256 is not None else None,
    )


def _hash_files(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `root` but config.json."""
    from fer_model.dataset import sha256_file

    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).as_posix() != CONFIG_FILE}


def verify_model_files(root: Path, config: ModelArtifactConfig) -> None:
    """Check each file config.json records against its sha256 (artifacts written before hashes: nothing to check).

    Raises:
        ArtifactError: a recorded file is missing or its content differs, naming the file.
    """
    from fer_model.dataset import sha256_file

    for name, expected in (config.sha256 or {}).items():
        file = root / name
        if not file.is_file():
            raise ArtifactError(f"{root} is incomplete: {name} is missing; copy the whole artifact again "
                                "or re-run `fer-mtl train`")
        actual = sha256_file(file)
        if actual != expected:
            raise ArtifactError(f"{file} fails its hash check ({CONFIG_FILE} says {expected}, file is {actual}): "
                                "the artifact was modified or truncated; copy it again or re-run `fer-mtl train`")


def read_model_config(path: str | os.PathLike[str]) -> ModelArtifactConfig:
    """Parse and check a model artifact's config.json without importing TensorFlow or Keras.

    Raises:
        ArtifactError: naming the folder and what is wrong (missing, unparsable, other format or
            version, a missing key or one of the wrong type, a label order this fer-mtl does not use).
    """
    return ModelArtifactConfig.read(path)


def load_model_artifact(path: str | os.PathLike[str]) -> ModelArtifact:
    """Load a model artifact's Keras model and config (checks format, version, file hashes and head names).

    No code from the artifact runs: see `fer_model._keras_file`.

    Raises:
        ArtifactError: the artifact is missing, of another version, a file fails its hash check, it
            holds a pickle or a model file that could run code, or its model does not match its config.
    """
    config = read_model_config(path)
    root = Path(path)
    keras_path = root / KERAS_FILE
    if not keras_path.is_file():
        raise ArtifactError(f"{root} is incomplete: {KERAS_FILE} is missing")
    _refuse_pickles(root)
    verify_model_files(root, config)
    # Checked before Keras reads it, then loaded uncompiled (inference needs no optimizer) in safe mode.
    model = load_keras_model(keras_path)
    heads = sorted(model.output_names) if hasattr(model, "output_names") else None
    if heads is not None and heads != sorted(config.tasks):
        raise ArtifactError(f"{keras_path} has heads {heads} but {CONFIG_FILE} lists {sorted(config.tasks)}")
    return ModelArtifact(model=model, config=config, path=root)


def _refuse_pickles(root: Path) -> None:
    """Refuse an artifact folder holding a file in a format whose reading can run code."""
    found = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in CODE_CARRYING_SUFFIXES)
    if found:
        raise ArtifactError(
            f"{root} holds {found}: a fer-mtl model artifact holds no pickles or HDF5 models, and these are "
            "not read; remove them, or re-create the artifact with `fer-mtl train`"
        )
