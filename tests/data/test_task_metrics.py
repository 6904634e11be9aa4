"""GLUE metrics against values worked out by hand, chosen so that every metric gives a different number."""

from __future__ import annotations

import numpy as np
import pytest

from minimoe.data import TASKS
from minimoe.errors import MiniMoEError

# TP = 3 (items 0, 3, 5), TN = 1 (item 1), FP = 1 (item 2), FN = 1 (item 4)
PREDS = [1, 0, 1, 1, 0, 1]
LABELS = [1, 0, 0, 1, 1, 1]
ACCURACY = 4 / 6
F1 = 2 * 3 / (2 * 3 + 1 + 1)  # 0.75
MCC = (3 * 1 - 1 * 1) / np.sqrt((3 + 1) * (3 + 1) * (1 + 1) * (1 + 1))  # 0.25


def test_classification_metrics_and_main_scores():
    assert TASKS["mrpc"].score(PREDS, LABELS) == pytest.approx(
        {"accuracy": ACCURACY, "f1": F1, "score": (ACCURACY + F1) / 2}
    )
    assert TASKS["cola"].score(PREDS, LABELS) == pytest.approx({"mcc": MCC, "score": MCC})
    assert TASKS["sst2"].score(PREDS, LABELS) == pytest.approx({"accuracy": ACCURACY, "score": ACCURACY})


def test_logits_are_reduced_by_argmax():
    logits = np.eye(3)[[0, 2, 1, 1]] * 5 - 1
    assert TASKS["mnli"].score(logits, [0, 2, 2, 1])["accuracy"] == pytest.approx(0.75)


def test_regression_metrics():
    preds = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    labels = np.array([2.0, 1.0, 4.0, 3.0, 10.0])
    pearson = np.sum((preds - preds.mean()) * (labels - labels.mean())) / np.sqrt(
        np.sum((preds - preds.mean()) ** 2) * np.sum((labels - labels.mean()) ** 2)
    )
    spearman = 1 - 6 * (1 + 1 + 1 + 1 + 0) / (5 * (5**2 - 1))  # rank differences -1, 1, -1, 1, 0: 0.8
    results = TASKS["stsb"].score(preds[:, None], labels)
    assert results == pytest.approx({"pearson": pearson, "spearman": spearman, "score": (pearson + spearman) / 2})
    assert pearson != pytest.approx(spearman)


def test_length_mismatch_is_an_error():
    with pytest.raises(MiniMoEError, match=r"task 'sst2': got \(2,\) predictions for \(3,\) labels"):
        TASKS["sst2"].score([0, 1], [0, 1, 1])
