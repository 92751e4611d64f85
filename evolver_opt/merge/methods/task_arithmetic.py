"""Task arithmetic: ``base + lambda * sum_i w_i * (theta_i - base)`` (Ilharco et al. 2023)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from evolver_opt.errors import ConfigError
from evolver_opt.merge.methods._base import MergeMethod, SlotParts, model_weights

if TYPE_CHECKING:
    from evolver_opt.merge.engine import MergeEngine, TensorSlot


class TaskArithmetic(MergeMethod):
    """Scaled sum of task vectors; weights default to 1 and lambda to 1."""

    name = "task_arithmetic"
    url = "https://arxiv.org/abs/2212.04089"
    linear = True
    reference = True
    grid = tuple({"lambda": round(0.1 * k, 1)} for k in range(1, 11))
    params = ("weights", "lambda_")
    separable = True

    def coefficients(
        self,
        engine: MergeEngine,
        weights: Sequence[float] | None = None,
        lambda_: float = 1.0,
    ) -> np.ndarray:
        if not np.isfinite(lambda_):
            raise ConfigError(f"lambda={lambda_} must be finite")
        w = model_weights(weights, engine.n_models, normalize=False)
        return np.repeat((float(lambda_) * w)[:, None], engine.n_groups, axis=1)

    def slot_parts(
        self, engine: MergeEngine, weights: Sequence[float] | None = None, lambda_: float = 1.0
    ) -> SlotParts:
        return _Scaled(self.coefficients(engine, weights, lambda_)[:, 0])


class _Scaled(SlotParts):
    """``(1 - sum_i c_i) base + sum_i c_i theta_i``: the base's share is the constant."""

    def constant(self, tensor: TensorSlot) -> torch.Tensor | None:
        return tensor.base.double() * (1.0 - sum(self.weights))
