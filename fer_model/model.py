"""The paper's multi-task CNN (arXiv 2110.15028, official code), as one Keras 3 functional builder.

Written with `keras` layers only (no TensorFlow imports), so it builds and runs under
KERAS_BACKEND=tensorflow, jax or torch. The model takes raw uint8-valued pixels; rescaling to
[0, 1] and the optional augmentation live inside it, so serving never re-implements preprocessing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fer_model._settings import Settings, check_bool, check_int, is_number
from fer_model.errors import ConfigError
from fer_model.tasks import TASK_NAMES, get_task

if TYPE_CHECKING:  # keras is heavy; import it only where a model is built
    import keras
    import numpy as np

logger = logging.getLogger(__name__)

#: Name of the model's single input (and of the SavedModel serving signature's input).
INPUT_NAME = "image"

# (filters, kernel size) of the three convolution blocks at width 1.0.
_BLOCKS: tuple[tuple[int, int], ...] = ((64, 5), (128, 3), (256, 3))
_DENSE_UNITS = 128
# Augmentation strengths: small, because the faces are already aligned (|rotation| <= 10 deg).
_ROTATION_FACTOR = 0.03  # fraction of a full turn: about +-11 degrees
_ZOOM_FACTOR = 0.1
_TRANSLATION_FACTOR = 0.1
# Random erasing (Zhong et al. 2017): patch area as a fraction of the face, filled with noise.
_ERASING_SCALE = (0.02, 0.2)


@dataclass(frozen=True)
class ModelConfig(Settings):
    """Architecture settings.

    Attributes:
        width: Multiplier on every layer's filter/unit count (1.0 = the paper; 0.25 keeps tests fast).
        tasks: Heads to build, a non-empty subset of `TASK_NAMES`; stored in canonical order.
            `("emotion",)` gives the paper's single-task comparison model.
        augment: Add random flip/rotation/zoom/translation layers, active only in training.
        image_size: Side of the square grayscale input (the dataset's image size).
        dropout: Dropout rates after the three conv blocks and after the dense layer.
        l2: Optional L2 penalty on conv and dense kernels (None = none, as in the paper).
        random_erasing: Probability, in [0, 1], that a training face gets one random patch replaced
            by noise (0 = off); active only in training, like `augment`.
    """

    width: float = 1.0
    tasks: tuple[str, ...] = TASK_NAMES
    augment: bool = False
    image_size: int = 50
    dropout: tuple[float, float, float, float] = (0.6, 0.5, 0.4, 0.4)
    l2: float | None = None
    random_erasing: float = 0.0

    def __post_init__(self) -> None:
        if not is_number(self.width) or not self.width > 0:
            raise ConfigError(f"`width` must be > 0, got {self.width!r} (a finite number)")
        if isinstance(self.tasks, str):
            raise ConfigError(f"`tasks` must be a sequence of task names, got the string {self.tasks!r}")
        tasks = tuple(self.tasks)
        if not tasks:
            raise ConfigError(f"`tasks` must name at least one of {TASK_NAMES}, got none")
        unknown = [t for t in tasks if t not in TASK_NAMES]
        if unknown:
            raise ConfigError(f"`tasks` has unknown task(s) {unknown}; expected a subset of {TASK_NAMES}")
        if len(set(tasks)) != len(tasks):
            raise ConfigError(f"`tasks` has duplicates: {list(tasks)}")
        # Canonical order, so head order (and config equality) never depends on how the caller listed them.
        object.__setattr__(self, "tasks", tuple(t for t in TASK_NAMES if t in tasks))
        check_bool("augment", self.augment)
        # Three 2x2 max-pools need at least 8 pixels to leave a 1x1 map.
        check_int("image_size", self.image_size, minimum=8)
        dropout = tuple(self.dropout)
        if len(dropout) != 4:
            raise ConfigError(f"`dropout` must have 4 rates (3 conv blocks + dense), got {len(dropout)}")
        for rate in dropout:
            if not is_number(rate) or not 0.0 <= rate < 1.0:
                raise ConfigError(f"`dropout` rates must be in [0, 1), got {list(dropout)}")
        object.__setattr__(self, "dropout", tuple(float(r) for r in dropout))
        if self.l2 is not None and (not is_number(self.l2) or not self.l2 >= 0.0):
            raise ConfigError(f"`l2` must be None or a finite value >= 0, got {self.l2!r}")
        erasing = self.random_erasing
        if isinstance(erasing, bool) or not isinstance(erasing, int | float) or not 0.0 <= erasing <= 1.0:
            raise ConfigError(f"`random_erasing` must be a probability in [0, 1], got {erasing!r}")
        object.__setattr__(self, "random_erasing", float(erasing))

    def scaled(self, units: int) -> int:
        """`units` times the width multiplier, at least 1."""
        return max(1, round(units * self.width))


def build_model(config: ModelConfig) -> keras.Model:
    """Build the (uncompiled) multi-task CNN.

    Args:
        config: Architecture settings.

    Returns:
        A functional `keras.Model` with one input named `image` (float32 [N, S, S, 1] holding raw
        0..255 pixel values; uint8 arrays are accepted and cast) and a dict output
        `{task: softmax probabilities [N, num_classes]}`, one Dense layer named after each task.
        Under a mixed-precision global policy the heads still compute and output float32.
    """
    import keras
    from keras import layers

    size = config.image_size
    regularizer = keras.regularizers.L2(config.l2) if config.l2 else None

    # float32 input (not uint8) so callers may pass either uint8 arrays or float pixel values.
    inputs = keras.Input(shape=(size, size, 1), dtype="float32", name=INPUT_NAME)
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)

    # Augmentation layers are identities at inference, so the saved model stays deterministic.
    if config.augment:
        x = layers.RandomFlip("horizontal", name="aug_flip")(x)
        x = layers.RandomRotation(_ROTATION_FACTOR, fill_mode="nearest", name="aug_rotate")(x)
        x = layers.RandomZoom(_ZOOM_FACTOR, fill_mode="nearest", name="aug_zoom")(x)
        x = layers.RandomTranslation(
            _TRANSLATION_FACTOR, _TRANSLATION_FACTOR, fill_mode="nearest", name="aug_translate"
        )(x)
    if config.random_erasing:
        p = config.random_erasing
        x = layers.RandomErasing(factor=(p, p), scale=_ERASING_SCALE, value_range=(0.0, 1.0), name="aug_erase")(x)

    # Three blocks of [Conv2D -> BN] x 2 -> MaxPool -> Dropout, as in the paper's official code.
    for block, ((filters, kernel), rate) in enumerate(zip(_BLOCKS, config.dropout[:3], strict=True), start=1):
        for conv in (1, 2):
            x = layers.Conv2D(
                config.scaled(filters),
                kernel,
                padding="same",
                activation="elu",
                kernel_initializer="he_normal",
                kernel_regularizer=regularizer,
                name=f"block{block}_conv{conv}",
            )(x)
            x = layers.BatchNormalization(name=f"block{block}_bn{conv}")(x)
        x = layers.MaxPooling2D(pool_size=2, name=f"block{block}_pool")(x)
        x = layers.Dropout(rate, name=f"block{block}_dropout")(x)

    # Shared dense trunk.
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(
        config.scaled(_DENSE_UNITS),
        activation="elu",
        kernel_initializer="he_normal",
        kernel_regularizer=regularizer,
        name="dense",
    )(x)
    x = layers.BatchNormalization(name="dense_bn")(x)
    x = layers.Dropout(config.dropout[3], name="dense_dropout")(x)

    # One softmax head per task; float32 so mixed precision never yields float16 probabilities.
    outputs = {
        task: layers.Dense(get_task(task).num_classes, activation="softmax", dtype="float32", name=task)(x)
        for task in config.tasks
    }
    model = keras.Model(inputs=inputs, outputs=outputs, name="fer_mtl")
    logger.debug("built model: width=%s tasks=%s params=%d", config.width, config.tasks, model.count_params())
    return model


#: Bias given to a class that never had a training label: its softmax probability underflows to 0.
SILENCED_BIAS = -1e4


def silence_classes(model: keras.Model, classes: Mapping[str, Sequence[str]]) -> None:
    """Make `model` never predict the named classes, in place (probability 0 on every input).

    A class with no training label has no meaning, yet masked losses leave its output free on
    faces from sources that do not label that task (e.g. `unsure` gender on FER2013 faces when
    gender comes from UTKFace alone), where it can win the argmax. Setting its head's bias far
    below any logit removes it from the softmax inside the model itself, so the Keras file, the
    SavedModel and every server agree.

    Args:
        model: A model from `build_model` (one Dense head named after each task).
        classes: task -> class names to silence; tasks the model lacks are an error.
    """
    for task, names in classes.items():
        if not names:
            continue
        try:
            head = model.get_layer(task)
        except ValueError:
            raise ConfigError(f"model has no {task!r} head to silence classes of") from None
        kernel, bias = head.get_weights()
        for name in names:
            bias[get_task(task).index(name)] = SILENCED_BIAS
        head.set_weights([kernel, bias])


def recalibrate_batch_norm(model: keras.Model, images: np.ndarray, *, batch_size: int = 256) -> None:
    """Set every BatchNormalization layer's moving mean and variance to its inputs' statistics on `images`, in place.

    The statistics are computed in inference mode (dropout and augmentation off), layer after layer
    in graph order, so each layer sees the earlier ones already recalibrated: the result is exactly
    what inference on `images` would normalise with ("precise BN", Wu & Johnson, arXiv 2105.07576).
    Why: the moving averages (momentum 0.99) still hold much of their initial (0, 1) and of the early
    steps' activations after a few hundred steps, and they are gathered with dropout on. On real
    multi-task faces that put 97% of validation faces in one class after epoch 1
    (experiments/real_faces/README.md, "BatchNorm statistics").

    Args:
        model: A model from `build_model` (one image input; BN over the last axis).
        images: A sample of training faces, [N, S, S, 1] pixel values as the model takes them.
        batch_size: Faces per forward pass (memory only; the statistics cover all of `images`).
    """
    import keras
    import numpy as np

    if len(images) == 0:
        raise ConfigError("recalibrate_batch_norm needs at least one image, got none; pass a sample of training faces")
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        features = keras.Model(model.input, layer.input)
        total: np.ndarray | float = 0.0
        squares: np.ndarray | float = 0.0
        count = 0
        for start in range(0, len(images), batch_size):
            chunk = np.asarray(images[start:start + batch_size], dtype=np.float32)
            values = keras.ops.convert_to_numpy(features(chunk, training=False)).astype(np.float64)
            values = values.reshape(-1, values.shape[-1])
            total = total + values.sum(axis=0)
            squares = squares + np.square(values).sum(axis=0)
            count += len(values)
        mean = np.asarray(total) / count
        variance = np.maximum(np.asarray(squares) / count - np.square(mean), 0.0)
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(variance.astype(np.float32))
