"""Keras objects for masked multi-task training: the masked loss and accuracy metric.

Written with `keras.ops` only (every backend). The loss and metric are registered serialisable
under the package "fer_model", so a compiled model saved with them reloads once this module is
imported. (The model artifact stores an uncompiled model, which needs none of them.)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from fer_model.tasks import MISSING

logger = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="fer_model")
class MaskedSparseCrossentropy(keras.losses.Loss):
    """Sparse categorical cross-entropy on probabilities, ignoring samples labelled -1.

    The batch loss is the sum over labelled samples divided by their count, so an all-unlabelled
    batch gives 0 (not NaN) and unlabelled samples contribute no gradient.

    Args:
        label_smoothing: Mass spread uniformly over the classes, in [0, 1).
        class_weights: Optional weight per class, applied by each sample's true class.
    """

    def __init__(
        self,
        label_smoothing: float = 0.0,
        class_weights: Sequence[float] | None = None,
        name: str = "masked_sparse_crossentropy",
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        # The reduction is fixed: `call` already normalises by the labelled count, so only a sum is right.
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="sum", dtype=dtype, **kwargs)
        self.label_smoothing = float(label_smoothing)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_pred = ops.cast(y_pred, "float32")
        num_classes = y_pred.shape[-1]
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        labelled = ops.not_equal(labels, MISSING)
        mask = ops.cast(labelled, "float32")
        # -1 is mapped to class 0 only to keep one_hot/take valid; the mask zeroes its loss and gradient.
        safe = ops.where(labelled, labels, ops.zeros_like(labels))
        target = ops.one_hot(safe, num_classes, dtype="float32")
        if self.label_smoothing:
            target = target * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        per_sample = ops.categorical_crossentropy(target, y_pred, from_logits=False)
        weights = mask
        if self.class_weights is not None:
            weights = weights * ops.take(ops.convert_to_tensor(self.class_weights, dtype="float32"), safe)
        count = ops.maximum(ops.sum(mask), 1.0)
        return per_sample * weights / count

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(label_smoothing=self.label_smoothing, class_weights=self.class_weights)
        return config


@keras.saving.register_keras_serializable(package="fer_model")
class MaskedAccuracy(keras.metrics.Metric):
    """Top-1 accuracy over samples whose label is not -1 (0.0 while none has been seen)."""

    def __init__(self, name: str = "accuracy", dtype: Any = None) -> None:
        super().__init__(name=name, dtype=dtype)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        labelled = ops.not_equal(labels, MISSING)
        predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        hits = ops.logical_and(ops.equal(predicted, labels), labelled)
        self.correct.assign_add(ops.sum(ops.cast(hits, self.dtype)))
        self.count.assign_add(ops.sum(ops.cast(labelled, self.dtype)))

    def result(self) -> Any:
        return ops.divide_no_nan(self.correct, self.count)

