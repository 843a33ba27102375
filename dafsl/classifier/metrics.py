"""Classification metrics for the gender classifier, in numpy (no sklearn dependency).

All take integer labels ``y_true`` (N,) in ``0..C-1`` and class probabilities
``probs`` (N, C); the prediction is the arg-max. With two classes, ROC-AUC ranks the
probability of ``positive`` (the Dlack class, female) and is the Mann-Whitney
statistic with ties counted as one half.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.stats import rankdata

from dafsl.errors import DafslError


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def roc_auc(y_true: np.ndarray, score: np.ndarray, positive: int = 1) -> float | None:
    """Area under the ROC curve of ``score`` (N,) for class ``positive``; None when one
    class is absent (the AUC is undefined)."""
    y = np.asarray(y_true) == positive
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(np.asarray(score, dtype=np.float64))  # average ranks: ties count 1/2
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str],
                           positive: str = "female") -> dict:
    """Flat dict of figures for logging and the summary.

    Keys: ``accuracy``, ``balanced_accuracy`` (mean per-class recall), ``recall_<c>``,
    ``precision_<c>``, ``f1_<c>``, ``f1_macro``, ``roc_auc`` (``positive`` vs the rest,
    None if undefined), ``n_<c>`` (true counts) and ``confusion`` (C×C nested list).
    A class never predicted has precision 0 (and F1 0), as scikit-learn's default.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n, c = len(y_true), len(classes)
    if probs.shape != (n, c):
        raise DafslError(f"classification_metrics: probs must have shape ({n}, {c}), got {probs.shape}")
    if n == 0:
        raise DafslError("classification_metrics: no samples to score")
    if positive not in classes:
        raise DafslError(f"classification_metrics: positive class '{positive}' not in {list(classes)}")
    cm = confusion_matrix(y_true, probs.argmax(axis=1), c)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    recall = np.divide(tp, support, out=np.zeros(c), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(c), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(c), where=denom > 0)
    present = support > 0
    out = {"accuracy": float(tp.sum() / n),
           "balanced_accuracy": float(recall[present].mean()),
           "f1_macro": float(f1[present].mean()),
           "roc_auc": roc_auc(y_true, probs[:, list(classes).index(positive)],
                              list(classes).index(positive))}
    for i, name in enumerate(classes):
        out[f"recall_{name}"] = float(recall[i])
        out[f"precision_{name}"] = float(precision[i])
        out[f"f1_{name}"] = float(f1[i])
        out[f"n_{name}"] = int(support[i])
    out["confusion"] = cm.tolist()
    return out


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: Path,
                   title: str = "") -> Path:
    """Write the confusion matrix as a PNG (counts and row-normalised rates)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion, dtype=np.int64)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=120)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{rates[i, j]:.0%}", ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
