"""Weighted average of the fine-tuned models (weights normalized to sum to one)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from evolver_opt.merge.methods._base import MergeMethod, SlotParts, model_weights

if TYPE_CHECKING:
    from evolver_opt.merge.engine import MergeEngine


class Average(MergeMethod):
    """``theta = sum_i w_i theta_i`` with ``sum_i w_i = 1`` (Wortsman et al., model soups)."""

    name = "average"
    url = "https://arxiv.org/abs/2203.05482"
    linear = True
    reference = True
    params = ("weights",)
    separable = True

    def coefficients(
        self, engine: MergeEngine, weights: Sequence[float] | None = None
    ) -> np.ndarray:
        w = model_weights(weights, engine.n_models, normalize=True)
        return np.repeat(w[:, None], engine.n_groups, axis=1)

    def slot_parts(self, engine: MergeEngine, weights: Sequence[float] | None = None) -> SlotParts:
        return SlotParts(model_weights(weights, engine.n_models, normalize=True))
