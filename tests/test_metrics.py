"""Metrics against examples worked out by hand (in the comments)."""

import numpy as np
import pytest

from fer_model.errors import DataError
from fer_model.metrics import accuracy, confusion_matrix, macro_f1, per_class_metrics, score_task

# Pairs after dropping the -1 truth: (0,0) (0,1) (1,1) (1,1) (2,0); class 3 never occurs.
Y_TRUE = np.array([0, 0, 1, 1, 2, -1], dtype=np.int8)
Y_PRED = np.array([0, 1, 1, 1, 0, 2])


def test_confusion_matrix_rows_are_truth_and_missing_is_dropped():
    cm = confusion_matrix(Y_TRUE, Y_PRED, num_classes=4)
    expected = np.array([[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(cm, expected)


def test_accuracy_ignores_missing():
    # 3 of the 5 labelled samples are right; the unlabelled one (predicted 2) does not count.
    assert accuracy(Y_TRUE, Y_PRED, num_classes=4) == pytest.approx(0.6)


def test_per_class_precision_recall_f1():
    pc = per_class_metrics(confusion_matrix(Y_TRUE, Y_PRED, num_classes=4))
    # class 0: tp 1, predicted 2, true 2 -> P 1/2, R 1/2, F1 1/2
    # class 1: tp 2, predicted 3, true 2 -> P 2/3, R 1, F1 2*(2/3)/(5/3) = 0.8
    # class 2: never predicted, true 1 -> P 0 (0/0 -> 0), R 0, F1 0; class 3 all zero
    np.testing.assert_allclose(pc.precision, [0.5, 2 / 3, 0.0, 0.0])
    np.testing.assert_allclose(pc.recall, [0.5, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(pc.f1, [0.5, 0.8, 0.0, 0.0])
    np.testing.assert_array_equal(pc.support, [2, 2, 1, 0])


def test_macro_f1_excludes_classes_absent_from_truth_and_prediction():
    cm = confusion_matrix(Y_TRUE, Y_PRED, num_classes=4)
    # Mean over classes 0, 1, 2 only: (0.5 + 0.8 + 0) / 3; counting class 3 would give 1.3 / 4.
    assert macro_f1(cm) == pytest.approx(1.3 / 3)


def test_macro_f1_keeps_a_class_that_is_only_predicted():
    # class 1 is predicted once but never true: F1 0 stays in the mean.
    # class 0: P 1, R 1/2 -> F1 2/3; macro = (2/3 + 0) / 2.
    cm = confusion_matrix(np.array([0, 0]), np.array([0, 1]), num_classes=3)
    assert macro_f1(cm) == pytest.approx(1 / 3)


def test_perfect_prediction_scores_one():
    y = np.array([0, 1, 2, 2, 1])
    scores = score_task(y, y, num_classes=3)
    assert scores.accuracy == 1.0
    assert scores.macro_f1 == 1.0


def test_score_task_counts_and_consistency():
    scores = score_task(Y_TRUE, Y_PRED, num_classes=4)
    assert (scores.n_labelled, scores.n_unlabelled) == (5, 1)
    assert scores.accuracy == pytest.approx(0.6)
    assert scores.macro_f1 == pytest.approx(1.3 / 3)
    assert int(scores.confusion.sum()) == scores.n_labelled


def test_all_unlabelled_gives_none_not_a_crash():
    scores = score_task(np.full(3, -1), np.array([0, 1, 2]), num_classes=3)
    assert scores.accuracy is None and scores.macro_f1 is None
    assert (scores.n_labelled, scores.n_unlabelled) == (0, 3)
    assert accuracy(np.full(3, -1), np.array([0, 1, 2]), num_classes=3) is None


@pytest.mark.parametrize(
    ("y_true", "y_pred", "match"),
    [
        (np.array([0, 1]), np.array([0]), "equal length"),
        (np.array([[0, 1]]), np.array([[0, 1]]), "1-D"),
        (np.array([0, 5]), np.array([0, 1]), "y_true.*outside"),
        (np.array([0, 1]), np.array([0, 3]), "y_pred.*outside"),
        (np.array([0, -2]), np.array([0, 1]), "y_true.*outside"),
        (np.array([0.0, 1.0]), np.array([0, 1]), "integer"),
    ],
)
def test_bad_label_arrays_raise_data_error(y_true, y_pred, match):
    with pytest.raises(DataError, match=match):
        confusion_matrix(y_true, y_pred, num_classes=3)


def test_non_square_confusion_matrix_is_rejected():
    with pytest.raises(DataError, match="square"):
        per_class_metrics(np.zeros((2, 3)))
