"""GLUE metrics (via scikit-learn and SciPy) and each task's main score."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from minimoe.errors import MiniMoEError

METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda preds, labels: float(accuracy_score(labels, preds)),
    "f1": lambda preds, labels: float(f1_score(labels, preds, pos_label=1, zero_division=0.0)),
    "mcc": lambda preds, labels: float(matthews_corrcoef(labels, preds)),
    "pearson": lambda preds, labels: float(pearsonr(preds, labels).statistic),
    "spearman": lambda preds, labels: float(spearmanr(preds, labels).statistic),
}
"""Metric name -> fn(predictions, labels); f1 is binary F1 of class 1 (GLUE's MRPC/QQP convention)."""


def compute_metrics(
    metrics: Sequence[str], preds: ArrayLike, labels: ArrayLike, classification: bool, task: str = "task"
) -> dict[str, float]:
    """Score predictions (class ids, logits of shape [n, classes], or regression values) with the task's metrics.

    The result also holds "score", the task's main GLUE number: the mean of its metrics (accuracy/F1 for
    MRPC and QQP, Pearson/Spearman for STS-B, MCC for CoLA, accuracy elsewhere).
    """
    preds, labels = np.asarray(preds), np.asarray(labels)
    if preds.ndim == 2 and classification:
        preds = preds.argmax(axis=-1)
    elif preds.ndim == 2 and preds.shape[1] == 1:
        preds = preds[:, 0]
    if preds.shape != labels.shape or not len(labels):
        raise MiniMoEError(f"task {task!r}: got {preds.shape} predictions for {labels.shape} labels")
    results = {name: METRICS[name](preds, labels) for name in metrics}
    results["score"] = float(np.mean(list(results.values())))
    return results
