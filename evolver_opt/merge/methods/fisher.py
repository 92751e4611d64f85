"""Fisher-weighted averaging (Matena and Raffel 2022).

``theta_j = sum_i w_i F_i,j theta_i,j / sum_i w_i F_i,j`` with ``F_i`` the diagonal Fisher of
model i, estimated on that model's examples as the mean squared per-example gradient of
``log p(y_hat | x)``, ``y_hat`` the model's own prediction (summed over positions for
sequence outputs). Entries with no Fisher mass fall back to the weighted average.
Extra memory: three float32 buffers of the merged size plus one gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from evolver_opt.merge.methods._base import MergeMethod, model_weights
from evolver_opt.merge.methods._examples import (
    Examples,
    load_model,
    logits_of,
    model_inputs,
    per_model,
    single_examples,
)

if TYPE_CHECKING:
    from evolver_opt.merge.engine import MergeEngine


def diagonal_fisher(engine: MergeEngine, batches: Sequence, out: torch.Tensor) -> int:
    """Add the summed squared per-example gradients into flat ``out``; return the count."""
    params = engine.merged_parameters()
    count = 0
    for _, p, _, _ in params:
        p.requires_grad_(True)
    try:
        for example in single_examples(batches):
            engine.model.zero_grad(set_to_none=True)
            output = engine.model(**model_inputs(example, engine.device))
            logp = torch.log_softmax(logits_of(output).float(), dim=-1)
            logp.max(dim=-1).values.sum().backward()
            for _, p, start, end in params:
                if p.grad is not None:
                    out[start:end].add_(p.grad.reshape(-1).float().square())
            count += 1
    finally:
        for _, p, _, _ in params:
            p.requires_grad_(False)
            p.grad = None
    return count


class Fisher(MergeMethod):
    """Fisher-weighted average; ``examples`` maps each model name to its batches."""

    name = "fisher"
    url = "https://arxiv.org/abs/2111.09832"
    params = ("examples", "weights", "floor")

    def write(
        self,
        engine: MergeEngine,
        examples: Examples | None = None,
        weights: Sequence[float] | None = None,
        floor: float = 1e-12,
    ) -> None:
        lists = per_model(engine, examples)
        w = model_weights(weights, engine.n_models, normalize=True).tolist()
        kw = {"dtype": torch.float32, "device": engine.device}
        num = torch.zeros(engine.output.numel(), **kw)
        den = torch.zeros_like(num)
        fisher = torch.zeros_like(num)
        for i, batches in enumerate(lists):
            load_model(engine, i)
            fisher.zero_()
            n = diagonal_fisher(engine, batches, fisher)
            fisher.mul_(w[i] / n)
            theta = engine.stacked[i + 1].float()
            num.addcmul_(fisher, theta)
            den.add_(fisher)
        engine.apply(np.repeat(np.asarray(w)[:, None], engine.n_groups, axis=1))
        with torch.no_grad():
            has_mass = den > floor
            merged = num.div_(den.clamp_(min=floor)).to(engine.dtype)
            engine.output.copy_(torch.where(has_mass, merged, engine.output))
