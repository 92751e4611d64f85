"""DARE: drop task-vector entries at random, rescale the rest, then add (Yu et al. 2024).

"Language Models are Super Mario", sec. 3: keep a fraction ``density`` (= 1 - p) of each
task vector and scale kept entries by ``1 / density``. Here exactly
``round(density * numel)`` entries are kept per tensor, chosen by a generator seeded from
(seed, model index, tensor index), so a merge is reproducible and independent of order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from evolver_opt.merge.methods._base import MergeMethod, check_density, keep_count, model_weights
from evolver_opt.merge.methods.ties import SPARSE_GRID

if TYPE_CHECKING:
    from evolver_opt.merge.engine import MergeEngine, TensorSlot

DARE_SEED = 0


def _generator(seed: int, model: int, tensor: int) -> torch.Generator:
    state = np.random.SeedSequence([int(seed), int(model), int(tensor)]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def drop_and_rescale(tau: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """Keep ``round(density * numel)`` random entries of ``tau``, scaled by ``1 / density``."""
    n = tau.numel()
    k = keep_count(n, density)
    if k >= n:
        return tau.clone()
    keep = torch.randperm(n, generator=generator)[:k].to(tau.device)
    flat = tau.reshape(-1)
    out = torch.zeros_like(flat)
    out[keep] = flat[keep] / density
    return out.view_as(tau)


class Dare(MergeMethod):
    """``base + lambda * sum_i w_i * dare(tau_i)``, seeded."""

    name = "dare"
    url = "https://arxiv.org/abs/2311.03099"
    params = ("density", "lambda_", "weights", "seed")
    reference = True
    grid = tuple({**p, "seed": DARE_SEED} for p in SPARSE_GRID)

    def task_parts(
        self,
        engine: MergeEngine,
        density: float = 0.2,
        weights: Sequence[float] | None = None,
        seed: int = 0,
    ) -> Iterator[tuple[TensorSlot, torch.Tensor]]:
        density = check_density(density)
        w = model_weights(weights, engine.n_models, normalize=False).tolist()
        with torch.no_grad():
            for j, slot in enumerate(engine.slots()):
                base = slot.base.float()
                parts = torch.stack([
                    drop_and_rescale(m.float() - base, density, _generator(seed, i, j)) * wi
                    for i, (m, wi) in enumerate(zip(slot.models, w))
                ])  # fmt: skip
                yield slot, parts

    def write(
        self,
        engine: MergeEngine,
        density: float = 0.2,
        lambda_: float = 1.0,
        weights: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        density = check_density(density)
        w = model_weights(weights, engine.n_models, normalize=False).tolist()
        with torch.no_grad():
            for j, slot in enumerate(engine.slots()):
                base = slot.base.float()
                total = torch.zeros_like(base)
                for i, (m, wi) in enumerate(zip(slot.models, w)):
                    dropped = drop_and_rescale(m.float() - base, density, _generator(seed, i, j))
                    total.add_(dropped, alpha=wi)
                slot.out.copy_(base + lambda_ * total)
