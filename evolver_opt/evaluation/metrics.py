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
    """Unweighted mean of F1 over the labels present in ``labels`` or ``predictions``.

    A label that is neither a target nor predicted has no F1 and is left out of the mean (as
    scikit-learn's ``f1_score(average="macro")`` does with ``labels=None``): with 77 labels and
    a 50-example sample, a perfect model scores 1, not 50/77. ``num_labels`` is kept for the
    callers' signature; it no longer changes the score.
    """
    preds, gold = np.asarray(predictions, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    scores = []
    for k in np.union1d(np.unique(preds), np.unique(gold)):
        tp = int(((preds == k) & (gold == k)).sum())
        fp = int(((preds == k) & (gold != k)).sum())
        fn = int(((preds != k) & (gold == k)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn))
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
