"""Teacher soft targets in training: how they travel beside the true labels, and the loss on both.

A task with soft labels (`Dataset.soft_labels`, written by `fer_model.teachers`) trains on
float32 targets [N, 1 + classes]: column 0 is the true label (-1 where there is none), the other
columns the teacher's probabilities (NaN where there is no teacher target). By default a face's
true label wins and a teacher target counts only where the face has no true label. With a `blend`
above 0, a face that has both learns from both (Hinton et al., arXiv 1503.02531): a teacher's
probabilities carry what a single hard label cannot, such as which expressions a face is close
to, and they can soften the label noise of crowd-sourced sets like FER2013 (though a teacher no
stronger than its student did not pay there: experiments/real_faces/README.md). Tasks without
soft labels keep their int labels and `MaskedSparseCrossentropy`, so a dataset without soft
labels trains exactly as before.

Keras is imported at module level: `fer_model.training` imports this module only inside `fit`.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from fer_model._keras_objects import MaskedAccuracy
from fer_model.tasks import MISSING


def pack_targets(hard: np.ndarray, soft: np.ndarray, *, threshold: float, blend: float = 0.0) -> np.ndarray:
    """float32 [N, 1 + C]: the true label, then the teacher's probabilities where they count.

    A teacher row is blanked (NaN) where the face has no teacher target, where the teacher's top
    probability is below `threshold`, and, unless `blend` > 0, where the face has a true label.
    """
    targets = np.empty((len(hard), 1 + soft.shape[1]), dtype=np.float32)
    targets[:, 0] = hard
    rows = np.asarray(soft, dtype=np.float32)
    absent = np.isnan(rows).any(axis=1)
    confidence = np.where(absent, -1.0, np.nan_to_num(rows, nan=-1.0).max(axis=1))
    ignored = absent | (confidence < threshold)
    if not blend:
        ignored |= np.asarray(hard) != MISSING
    targets[:, 1:] = np.where(ignored[:, np.newaxis], np.nan, rows)
    return targets


def soft_target_count(targets: np.ndarray) -> int:
    """How many rows of packed `targets` carry a teacher target that training uses."""
    return int((~np.isnan(targets[:, 1:]).any(axis=1)).sum())


@keras.saving.register_keras_serializable(package="fer_model")
class MaskedDistillationLoss(keras.losses.Loss):
    """Cross-entropy on true labels where they exist and on teacher probabilities elsewhere.

    Per face: the true label's cross-entropy (label smoothing and class weights as
    `MaskedSparseCrossentropy`), or `weight` x T^2 x the cross-entropy between the teacher's
    probabilities and the student's softened at temperature T (Hinton et al.: T^2 keeps the
    gradient scale of a softened target comparable to a hard one); a face with both takes
    (1 - `blend`) x the first + `blend` x the second. The batch loss is the sum over faces with
    either target divided by their count, so faces with neither give no loss and no gradient.

    Args:
        weight: Loss weight of a teacher target relative to a true label, >= 0.
        temperature: T, > 0; the student's probabilities p become softmax(log(p) / T).
        blend: Share of the teacher's term on a face with a true label too, in [0, 1]; `pack_targets`
            keeps such faces' teacher rows only when its own `blend` is above 0.
        label_smoothing: Mass spread uniformly over the classes of a true label, in [0, 1).
        class_weights: Optional weight per class, applied by a true label's class.
    """

    def __init__(
        self,
        weight: float = 1.0,
        temperature: float = 1.0,
        blend: float = 0.0,
        label_smoothing: float = 0.0,
        class_weights: list[float] | None = None,
        name: str = "masked_distillation",
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        # `call` normalises by the count of faces with a target, so only a sum is right.
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="sum", dtype=dtype, **kwargs)
        self.weight = float(weight)
        self.temperature = float(temperature)
        self.blend = float(blend)
        self.label_smoothing = float(label_smoothing)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_pred = ops.cast(y_pred, "float32")
        num_classes = y_pred.shape[-1]
        y_true = ops.cast(y_true, "float32")
        labels = ops.cast(y_true[:, 0], "int32")
        teacher = y_true[:, 1:]
        labelled = ops.not_equal(labels, MISSING)
        has_teacher = ops.logical_not(ops.any(ops.isnan(teacher), axis=-1))
        both = ops.cast(ops.logical_and(labelled, has_teacher), "float32")
        taught = ops.logical_and(ops.logical_not(labelled), has_teacher)
        safe = ops.where(labelled, labels, ops.zeros_like(labels))
        target = ops.one_hot(safe, num_classes, dtype="float32")
        if self.label_smoothing:
            target = target * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        hard_loss = ops.categorical_crossentropy(target, y_pred, from_logits=False)
        hard_weight = ops.cast(labelled, "float32") * (1.0 - self.blend * both)
        if self.class_weights is not None:
            hard_weight = hard_weight * ops.take(ops.convert_to_tensor(self.class_weights, dtype="float32"), safe)
        soft_loss = self._soft_cross_entropy(ops.where(ops.isnan(teacher), 0.0, teacher), y_pred)
        soft_weight = (ops.cast(taught, "float32") + self.blend * both) * self.weight
        count = ops.maximum(ops.sum(ops.cast(labelled, "float32")) + ops.sum(ops.cast(taught, "float32")), 1.0)
        return (hard_loss * hard_weight + soft_loss * soft_weight) / count

    def _soft_cross_entropy(self, teacher: Any, y_pred: Any) -> Any:
        # log p / T renormalised is the log of softmax(logits / T): the model's softmax only shifts logits.
        scaled = ops.log(ops.clip(y_pred, keras.config.epsilon(), 1.0)) / self.temperature
        log_student = scaled - ops.logsumexp(scaled, axis=-1, keepdims=True)
        return -ops.sum(teacher * log_student, axis=-1) * (self.temperature**2)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(weight=self.weight, temperature=self.temperature, blend=self.blend,
                      label_smoothing=self.label_smoothing, class_weights=self.class_weights)
        return config


@keras.saving.register_keras_serializable(package="fer_model")
class TrueLabelAccuracy(MaskedAccuracy):
    """`MaskedAccuracy` over packed targets: scored on true labels (column 0) only, never on teacher targets."""

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        super().update_state(ops.cast(y_true, "float32")[:, 0], y_pred, sample_weight)
