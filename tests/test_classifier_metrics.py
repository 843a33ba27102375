"""Classifier metrics on a tiny hand-made case."""
from __future__ import annotations

import numpy as np
import pytest

from dafsl.classifier.metrics import classification_metrics, confusion_matrix, plot_confusion, roc_auc

CLASSES = ["male", "female"]


def probs_for(pred, p_female):
    """(N, 2) probabilities whose arg-max is ``pred`` and whose female column is ``p_female``."""
    p = np.asarray(p_female, dtype=float)
    assert np.array_equal(p > 0.5, np.asarray(pred) == 1)
    return np.stack([1 - p, p], axis=1)


def test_hand_made_confusion():
    # 6 males, 2 females. Predictions: males -> 5 male, 1 female; females -> 1 male, 1 female.
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    pred = [0, 0, 0, 0, 0, 1, 0, 1]
    # female scores: males .1 .2 .3 .4 .45 .6 ; females .35 .9
    probs = probs_for(pred, [.1, .2, .3, .4, .45, .6, .35, .9])
    m = classification_metrics(y, probs, CLASSES, positive="female")
    assert m["confusion"] == [[5, 1], [1, 1]]
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["recall_male"] == pytest.approx(5 / 6)
    assert m["recall_female"] == pytest.approx(1 / 2)
    assert m["balanced_accuracy"] == pytest.approx((5 / 6 + 1 / 2) / 2)
    assert m["precision_male"] == pytest.approx(5 / 6)
    assert m["precision_female"] == pytest.approx(1 / 2)
    assert m["f1_female"] == pytest.approx(0.5)
    assert m["f1_male"] == pytest.approx(5 / 6)
    assert m["f1_macro"] == pytest.approx((0.5 + 5 / 6) / 2)
    # AUC: pairs (female, male) where female scores higher: .35 beats .1 .2 .3 (3 of 6),
    # .9 beats all 6 -> 9 / 12
    assert m["roc_auc"] == pytest.approx(9 / 12)
    assert m["n_male"] == 6 and m["n_female"] == 2


def test_all_male_predictions_give_half_balanced_accuracy():
    y = np.array([0] * 9 + [1])
    m = classification_metrics(y, probs_for([0] * 10, [0.1] * 10), CLASSES)
    assert m["accuracy"] == pytest.approx(0.9)  # the imbalance trap accuracy hides
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["recall_female"] == 0 and m["precision_female"] == 0 and m["f1_female"] == 0
    assert m["roc_auc"] == pytest.approx(0.5)  # all ties count one half


def test_roc_auc_edge_cases():
    assert roc_auc(np.array([0, 0]), np.array([0.2, 0.3])) is None
    assert roc_auc(np.array([0, 1]), np.array([0.2, 0.3])) == 1.0
    assert roc_auc(np.array([1, 0]), np.array([0.2, 0.3])) == 0.0
    assert confusion_matrix(np.array([1, 1]), np.array([0, 1]), 3).tolist() == [[0, 0, 0], [1, 1, 0], [0, 0, 0]]


def test_confusion_png(tmp_path):
    path = plot_confusion([[5, 1], [1, 1]], CLASSES, tmp_path / "cm.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_shapes_are_errors():
    from dafsl.errors import DafslError

    with pytest.raises(DafslError, match="probs must have shape"):
        classification_metrics(np.array([0, 1]), np.ones((2, 3)) / 3, CLASSES)
