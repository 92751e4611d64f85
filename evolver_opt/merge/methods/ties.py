"""TIES-merging: trim each task vector by magnitude, elect a sign, average the agreeing ones.

Yadav et al. 2023, "TIES-Merging: Resolving Interference When Merging Models", sec. 3:
(1) trim: keep the top-``density`` fraction of each task vector by magnitude (per tensor);
(2) elect: the sign of the summed trimmed values per entry;
(3) disjoint mean: average only the non-zero entries that agree with the elected sign.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch

from evolver_opt.merge.methods._base import (
    MergeMethod,
    check_density,
    keep_count,
    model_weights,
    task_vectors,
)

if TYPE_CHECKING:
    from evolver_opt.merge.engine import MergeEngine, TensorSlot

SPARSE_GRID = tuple(
    {"density": d, "lambda": lam}
    for d in (0.1, 0.2, 0.4, 0.6, 0.8)
    for lam in (0.6, 0.8, 1.0, 1.2, 1.5)
)


def trim_magnitude(tau: torch.Tensor, density: float) -> torch.Tensor:
    """``tau`` with all but its ``round(density * numel)`` largest-magnitude entries zeroed."""
    k = keep_count(tau.numel(), density)
    if k >= tau.numel():
        return tau.clone()
    flat = tau.reshape(-1)
    keep = torch.topk(flat.abs(), k, sorted=False).indices
    out = torch.zeros_like(flat)
    out[keep] = flat[keep]
    return out.view_as(tau)


def ties_merge(taus: torch.Tensor, density: float) -> torch.Tensor:
    """Merged task vector from stacked task vectors ``(N, ...)`` (already weighted)."""
    trimmed = torch.stack([trim_magnitude(t, density) for t in taus])
    elected = torch.sign(trimmed.sum(dim=0))
    agree = (torch.sign(trimmed) == elected) & (trimmed != 0)
    total = (trimmed * agree).sum(dim=0)
    count = agree.sum(dim=0).clamp(min=1)
    return total / count


def ties_parts(taus: torch.Tensor, density: float) -> torch.Tensor:
    """Each model's share of :func:`ties_merge`: its trimmed, sign-agreeing entries over the
    count of agreeing models (the shares sum to the merge)."""
    trimmed = torch.stack([trim_magnitude(t, density) for t in taus])
    elected = torch.sign(trimmed.sum(dim=0))
    agree = (torch.sign(trimmed) == elected) & (trimmed != 0)
    return trimmed * agree / agree.sum(dim=0).clamp(min=1)


class Ties(MergeMethod):
    """``base + lambda * ties(w_i * tau_i)``; density is the kept fraction per tensor."""

    name = "ties"
    url = "https://arxiv.org/abs/2306.01708"
    params = ("density", "lambda_", "weights")
    reference = True
    grid = SPARSE_GRID

    def task_parts(
        self, engine: MergeEngine, density: float = 0.2, weights: Sequence[float] | None = None
    ) -> Iterator[tuple[TensorSlot, torch.Tensor]]:
        density = check_density(density)
        w = model_weights(weights, engine.n_models, normalize=False).tolist()
        with torch.no_grad():
            for slot in engine.slots():
                yield slot, ties_parts(task_vectors(slot, w), density)

    def write(
        self,
        engine: MergeEngine,
        density: float = 0.2,
        lambda_: float = 1.0,
        weights: Sequence[float] | None = None,
    ) -> None:
        density = check_density(density)
        w = model_weights(weights, engine.n_models, normalize=False).tolist()
        with torch.no_grad():
            for slot in engine.slots():
                base = slot.base.float()
                taus = torch.stack([(m.float() - base) * wi for m, wi in zip(slot.models, w)])
                slot.out.copy_(base + lambda_ * ties_merge(taus, density))
