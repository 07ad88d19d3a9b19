"""Classification metrics in pure numpy: accuracy, confusion matrix, precision/recall/F1, macro-F1.

Every function takes integer label arrays where `MISSING` (-1) in `y_true` means "this sample has
no label for this task"; such samples are dropped before anything is counted, so a task that is
labelled on only part of a mixed dataset is scored on exactly that part.

Conventions (chosen to match what a reader of the report expects, and written down because the
literature differs):
- Precision of a class that was never predicted, and recall of a class that never occurs, are 0/0;
  they are reported as 0.0 (scikit-learn's `zero_division=0`), so F1 of such a class is 0.0.
- Macro-F1 averages F1 over the classes that occur in the truth *or* in the predictions. A class
  absent from both says nothing about the model (a test split without any "70+" face), so it is
  left out of the mean instead of counting as 0 (which would punish the model for the data) or 1
  (which would reward it for nothing). A class the model predicts but the truth lacks stays in, at
  F1 0, because those predictions are all wrong.
- With no labelled sample at all, accuracy and macro-F1 are None: there is nothing to score.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from fer_model.errors import DataError
from fer_model.tasks import MISSING

logger = logging.getLogger(__name__)


def _labelled_pairs(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate the two label arrays and return them without the samples whose truth is MISSING."""
    if num_classes < 1:
        raise DataError(f"`num_classes` must be >= 1, got {num_classes}")
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.ndim != 1 or t.shape != p.shape:
        raise DataError(f"`y_true` and `y_pred` must be 1-D of equal length, got shapes {t.shape} and {p.shape}")
    for name, values in (("y_true", t), ("y_pred", p)):
        if values.size and not np.issubdtype(values.dtype, np.integer):
            raise DataError(f"`{name}` must hold integer class indices, got dtype {values.dtype}")
    keep = t != MISSING
    t = t[keep].astype(np.int64)
    p = p[keep].astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise DataError(f"`y_true` has labels outside -1..{num_classes - 1}: {sorted(set(t.tolist()))}")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise DataError(f"`y_pred` has predictions outside 0..{num_classes - 1} on labelled samples")
    return t, p


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, *, num_classes: int) -> np.ndarray:
    """int64 [C, C] counts: row = true class, column = predicted class; MISSING truths are dropped."""
    t, p = _labelled_pairs(y_true, y_pred, num_classes)
    # bincount over the flattened (true, pred) index is one pass and exact for integer counts.
    flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray, *, num_classes: int) -> float | None:
    """Fraction of labelled samples predicted correctly; None when no sample is labelled."""
    t, p = _labelled_pairs(y_true, y_pred, num_classes)
    if t.size == 0:
        return None
    return float(np.mean(t == p))


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, 0.0 where den is 0 (see the module docstring)."""
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


@dataclass(frozen=True)
class ClassMetrics:
    """Per-class precision, recall, F1 and support (true count), all float64/int64 [C]."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    predicted: np.ndarray

    def __post_init__(self) -> None:
        shapes = {a.shape for a in (self.precision, self.recall, self.f1, self.support, self.predicted)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise DataError(f"per-class arrays must be 1-D of one length, got shapes {sorted(shapes)}")


def per_class_metrics(cm: np.ndarray) -> ClassMetrics:
    """Precision, recall and F1 per class from a square confusion matrix (rows = truth)."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise DataError(f"confusion matrix must be square [C, C], got shape {cm.shape}")
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_ratio(tp, predicted)
    recall = _safe_ratio(tp, support)
    f1 = _safe_ratio(2 * precision * recall, precision + recall)
    return ClassMetrics(precision=precision, recall=recall, f1=f1, support=support, predicted=predicted)


def macro_f1(cm: np.ndarray) -> float | None:
    """Mean F1 over the classes present in truth or predictions; None for an empty matrix."""
    per_class = per_class_metrics(cm)
    present = (per_class.support > 0) | (per_class.predicted > 0)
    if not present.any():
        return None
    return float(per_class.f1[present].mean())


@dataclass(frozen=True)
class TaskScores:
    """Everything the evaluation reports for one task."""

    accuracy: float | None
    macro_f1: float | None
    confusion: np.ndarray
    per_class: ClassMetrics
    n_labelled: int
    n_unlabelled: int

    def __post_init__(self) -> None:
        if self.n_labelled < 0 or self.n_unlabelled < 0:
            raise DataError(f"counts must be >= 0, got {self.n_labelled} labelled, {self.n_unlabelled} unlabelled")
        if int(self.confusion.sum()) != self.n_labelled:
            raise DataError(f"confusion matrix holds {int(self.confusion.sum())} samples, expected {self.n_labelled}")


def score_task(y_true: np.ndarray, y_pred: np.ndarray, *, num_classes: int) -> TaskScores:
    """All metrics of one task at once (the confusion matrix is computed once and reused)."""
    cm = confusion_matrix(y_true, y_pred, num_classes=num_classes)
    n_labelled = int(cm.sum())
    correct = int(np.trace(cm))
    return TaskScores(
        accuracy=correct / n_labelled if n_labelled else None,
        macro_f1=macro_f1(cm),
        confusion=cm,
        per_class=per_class_metrics(cm),
        n_labelled=n_labelled,
        n_unlabelled=int(np.asarray(y_true).shape[0]) - n_labelled,
    )
