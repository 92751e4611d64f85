"""TIES-merging: trim each task vector by magnitude, elect a sign, average the agreeing ones.

Yadav et al. 2023, "TIES-Merging: Resolving Interference When Merging Models", sec. 3:
(1) trim: keep the top-``density`` fraction of each task vector by magnitude (per tensor);
(2) elect: the sign of the summed trimmed values per entry;
(3) disjoint mean: average only the non-zero entries that agree with the elected sign.
The task-arithmetic family with magnitude sparsification and sign consensus
(``_task_arithmetic_family.py``).
"""

from __future__ import annotations

import torch

from evolver_opt.merge.methods._task_arithmetic_family import (
    SPARSE_GRID,
    TaskArithmeticFamily,
    disjoint_mean,
    disjoint_parts,
    trim_magnitude,
)

__all__ = ["SPARSE_GRID", "Ties", "ties_merge", "ties_parts", "trim_magnitude"]


def ties_merge(taus: torch.Tensor, density: float) -> torch.Tensor:
    """Merged task vector from stacked task vectors ``(N, ...)`` (already weighted)."""
    return disjoint_mean(torch.stack([trim_magnitude(t, density) for t in taus]))


def ties_parts(taus: torch.Tensor, density: float) -> torch.Tensor:
    """Each model's share of :func:`ties_merge` (the shares sum to the merge)."""
    return disjoint_parts(torch.stack([trim_magnitude(t, density) for t in taus]))


class Ties(TaskArithmeticFamily):
    """``base + lambda * ties(w_i * tau_i)``; density is the kept fraction per tensor."""

    name = "ties"
    url = "https://arxiv.org/abs/2306.01708"
    params = ("density", "lambda_", "weights")
    reference = True
    grid = SPARSE_GRID
    sparsification = "magnitude"
    consensus = "sign"
