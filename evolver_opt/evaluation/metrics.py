"""Accuracy and macro-F1 from predictions, and the exact racing bound for accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: metric name -> whether an exact early-stopping bound exists for it
RACEABLE = {"accuracy": True, "macro_f1": False}


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Fraction of predictions equal to their labels."""
    preds, gold = np.asarray(predictions), np.asarray(labels)
    return float((preds == gold).sum() / len(gold)) if len(gold) else 0.0


def macro_f1(predictions: Sequence[int], labels: Sequence[int], num_labels: int) -> float:
    """Unweighted mean over labels of F1; a label never predicted nor present scores 0."""
    preds, gold = np.asarray(predictions), np.asarray(labels)
    scores = []
    for k in range(num_labels):
        tp = int(((preds == k) & (gold == k)).sum())
        fp = int(((preds == k) & (gold != k)).sum())
        fn = int(((preds != k) & (gold == k)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def best_possible_accuracy(correct: int, seen: int, total: int) -> float:
    """Accuracy if every one of the ``total - seen`` remaining examples were right."""
    return (correct + total - seen) / total if total else 0.0


def best_possible_mean(parts: Sequence[tuple[int, int, int]]) -> float:
    """Upper bound of the mean accuracy over (correct, seen, total) parts.

    Summed in the same order and way as the final mean, so the final mean can never exceed
    it (float rounding is monotone): stopping when it falls below a threshold is exact.
    """
    return sum(best_possible_accuracy(c, s, n) for c, s, n in parts) / len(parts)
