"""Does bfloat16 evaluation pick what float32 would? Checked once per process on the start
points (each expert alone and the static merges) over the dev set, before any trial.

``auto`` falls back to float32, with one warning, when a start point's argmax agreement is
below ``MIN_AGREEMENT``; an explicit ``bf16`` is kept and warned about. The result is stored on
the study (``evolver_opt:precision``) and shown in its note.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from evolver_opt.evaluation import Evaluator
from evolver_opt.evaluation.precision import MIN_AGREEMENT, agreement, hardware_bf16
from evolver_opt.search.attributes import PrecisionCheck


def _predictions(evaluator: Evaluator, keys: list[str]) -> list[torch.Tensor]:
    return [evaluator.predictions(k) for k in keys]


def check_precision(
    engine: Any,
    evaluator: Evaluator,
    dev_keys: list[str],
    points: dict[str, np.ndarray],
    *,
    setting: str,
    used: str,
    threshold: float | None = None,
    form: str | None = None,
) -> PrecisionCheck:
    """Score each start point in ``points`` in the engine's bfloat16 and in float32, compare the
    predictions, and switch the engine to float32 where ``auto`` disagrees too often
    (``threshold``: default ``MIN_AGREEMENT``)."""
    threshold = MIN_AGREEMENT if threshold is None else threshold
    if used == "fp32":
        reason = "configured" if setting == "fp32" else "no bfloat16 matmul hardware found"
        return PrecisionCheck(setting, "fp32", reason, threshold)
    low_precision = {}
    for name, coefficients in points.items():
        engine.apply(coefficients, form=form)
        low_precision[name] = _predictions(evaluator, dev_keys)
    scores = {}
    with engine.model_precision(torch.float32):
        for name, coefficients in points.items():
            engine.apply(coefficients, form=form)
            scores[name] = round(
                agreement(_predictions(evaluator, dev_keys), low_precision[name]), 6
            )
    worst = min(scores.values())
    why = "configured" if setting == "bf16" else hardware_bf16(str(engine.device)) or "forced"
    if worst >= threshold:
        return PrecisionCheck(setting, "bf16", why, threshold, scores)
    low = min(scores, key=scores.__getitem__)
    if setting == "bf16":
        warnings.warn(
            f"bfloat16 predictions agree with float32 on only {worst:.4f} of {low}'s dev examples "
            f'(threshold {threshold}); kept because precision = "bf16" was asked for',
            stacklevel=2,
        )
        why = "configured, below the agreement threshold"
        return PrecisionCheck(setting, "bf16", why, threshold, scores)
    warnings.warn(
        f"bfloat16 predictions agree with float32 on only {worst:.4f} of {low}'s dev examples "
        f"(threshold {threshold}): scoring in float32 instead",
        stacklevel=2,
    )
    engine.set_model_dtype(torch.float32)
    why = f"bf16 agreement {worst:.4f} < {threshold}"
    return PrecisionCheck(setting, "fp32", why, threshold, scores)
