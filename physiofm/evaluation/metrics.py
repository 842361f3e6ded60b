"""Classification metrics of a fold (scikit-learn), their chance levels, and the mean ± std over folds.

Chance is what the fold's own class balance gives for free: the same metrics of a predictor that
always answers the test fold's most common class (accuracy = that class's share, balanced accuracy
= 1 / classes present, kappa = 0, AUROC = 0.5).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, cohen_kappa_score, confusion_matrix, f1_score,
                             roc_auc_score)

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "kappa", "auroc")


def classification_metrics(y_true: Sequence[int], y_prob: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro/weighted F1, Cohen's kappa and (binary) AUROC.

    `y_prob` (n, classes) are class probabilities; AUROC is NaN for more than two classes or when
    the fold holds one class only.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if len(y_true) == 0:
        return {name: math.nan for name in METRICS}
    return _scores(y_true, y_prob.argmax(axis=1), y_prob[:, 1] if num_classes == 2 else None, num_classes)


def chance_metrics(y_true: Sequence[int], num_classes: int) -> dict[str, float]:
    """The metrics of always answering the most common class of `y_true` (with a constant score)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    if len(y_true) == 0:
        return {name: math.nan for name in METRICS}
    majority = int(np.bincount(y_true, minlength=num_classes).argmax())
    constant = np.full(len(y_true), majority)
    return _scores(y_true, constant, np.zeros(len(y_true)) if num_classes == 2 else None, num_classes)


def _scores(y_true: np.ndarray, y_pred: np.ndarray, score: np.ndarray | None, num_classes: int) -> dict[str, float]:
    labels = list(range(num_classes))
    two_classes = score is not None and len(np.unique(y_true)) == 2
    # one class in the fold: kappa is undefined (sklearn returns NaN); the agreement is then chance
    kappa = cohen_kappa_score(y_true, y_pred, labels=labels) if len(np.unique(np.r_[y_true, y_pred])) > 1 else 0.0
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "kappa": float(kappa),
        "auroc": float(roc_auc_score(y_true, score)) if two_classes else math.nan,
    }


def confusion(y_true: Sequence[int], y_prob: np.ndarray, num_classes: int) -> list[list[int]]:
    y_pred = np.asarray(y_prob).argmax(axis=1) if len(y_true) else np.zeros(0, dtype=np.int64)
    return confusion_matrix(np.asarray(y_true), y_pred, labels=list(range(num_classes))).tolist()


def summarize(per_fold: Sequence[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """(mean, std) of each metric over the folds that define it (population std, ddof 0)."""
    mean, std = {}, {}
    for name in METRICS:
        values = np.array([fold[name] for fold in per_fold if not math.isnan(fold.get(name, math.nan))])
        mean[name] = float(values.mean()) if len(values) else math.nan
        std[name] = float(values.std()) if len(values) else math.nan
    return mean, std
