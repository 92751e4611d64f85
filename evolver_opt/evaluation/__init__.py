"""Fast evaluation: cached tokenization, length-bucketed batches, accuracy/macro-F1, racing."""

from __future__ import annotations

from evolver_opt.evaluation.evaluator import EvalResult, Evaluator, MeanResult
from evolver_opt.evaluation.metrics import accuracy, best_possible_accuracy, macro_f1

__all__ = [
    "EvalResult",
    "Evaluator",
    "MeanResult",
    "accuracy",
    "best_possible_accuracy",
    "macro_f1",
]
