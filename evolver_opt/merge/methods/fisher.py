"""Fisher-weighted averaging (Matena and Raffel 2022).

``theta_j = sum_i w_i F_i,j theta_i,j / sum_i w_i F_i,j`` with ``F_i`` the diagonal Fisher of
model i, estimated on that model's examples as the mean squared per-example gradient of
``log p(y_hat | x)``, ``y_hat`` the model's own prediction (summed over positions for
sequence outputs). Entries with no Fisher mass fall back to the weighted average.
Extra memory: three float32 buffers of the merged size plus one gradient.

The Fishers can be computed apart (:func:`expert_fisher`, e.g. to cache them) and passed back
as ``fishers``, one flat float32 vector per model in the engine's layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from evolver_opt.errors import ConfigError
from evolver_opt.merge.methods._base import MergeMethod, SlotParts, model_weights
from evolver_opt.merge.methods._examples import (
    Examples,
    load_model,
    logits_of,
    model_inputs,
    per_model,
    single_examples,
)

if TYPE_CHECKING:
    from evolver_opt.merge.engine import MergeEngine, TensorSlot


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


def expert_fisher(engine: MergeEngine, i: int, batches: Sequence) -> torch.Tensor:
    """Model ``i``'s diagonal Fisher on ``batches`` (its own head), flat in the engine's layout:
    the mean squared per-example gradient, float32."""
    load_model(engine, i)
    fisher = torch.zeros(engine.output.numel(), dtype=torch.float32, device=engine.device)
    return fisher.div_(diagonal_fisher(engine, batches, fisher))


class Fisher(MergeMethod):
    """Fisher-weighted average; ``examples`` maps each model name to its batches, or
    ``fishers`` gives each model's precomputed Fisher (:func:`expert_fisher`)."""

    name = "fisher"
    url = "https://arxiv.org/abs/2111.09832"
    params = ("examples", "weights", "floor", "fishers")
    data = "statistics"
    statistics_argument = "fishers"
    separable = True

    def write(
        self,
        engine: MergeEngine,
        examples: Examples | None = None,
        weights: Sequence[float] | None = None,
        floor: float = 1e-12,
        fishers: Sequence[torch.Tensor] | None = None,
    ) -> None:
        if fishers is not None and len(fishers) != engine.n_models:
            raise ConfigError(f"fishers has {len(fishers)} entries, expected {engine.n_models}")
        lists = per_model(engine, examples) if fishers is None else None
        w = model_weights(weights, engine.n_models, normalize=True).tolist()
        num = torch.zeros(engine.output.numel(), dtype=torch.float32, device=engine.device)
        den = torch.zeros_like(num)
        for i in range(engine.n_models):
            fisher = expert_fisher(engine, i, lists[i]) if lists is not None else fishers[i]
            fisher = fisher.to(device=engine.device, dtype=torch.float32)
            num.addcmul_(fisher, engine.stacked[i + 1].float(), value=w[i])
            den.add_(fisher, alpha=w[i])
        engine.apply(np.repeat(np.asarray(w)[:, None], engine.n_groups, axis=1))
        with torch.no_grad():
            has_mass = den > floor
            merged = num.div_(den.clamp_(min=floor)).to(engine.dtype)
            engine.output.copy_(torch.where(has_mass, merged, engine.output))

    def slot_parts(
        self,
        engine: MergeEngine,
        examples: Examples | None = None,
        weights: Sequence[float] | None = None,
        floor: float = 1e-12,
        fishers: Sequence[torch.Tensor] | None = None,
    ) -> SlotParts:
        """:meth:`write` as per-model maps ``L_i(theta) = w_i F_i theta / sum_j w_j F_j`` (the
        weighted average where the denominator has no mass); one float32 vector of the merged
        size per model in memory."""
        if fishers is not None and len(fishers) != engine.n_models:
            raise ConfigError(f"fishers has {len(fishers)} entries, expected {engine.n_models}")
        if fishers is None:
            lists = per_model(engine, examples)
            fishers = [expert_fisher(engine, i, lists[i]) for i in range(engine.n_models)]
        w = model_weights(weights, engine.n_models, normalize=True).tolist()
        den = torch.zeros(engine.output.numel(), dtype=torch.float32, device=engine.device)
        for i in range(engine.n_models):
            den.add_(fishers[i].to(device=engine.device, dtype=torch.float32), alpha=w[i])
        has_mass = den > floor
        den.clamp_(min=floor)
        scales = []
        for i in range(engine.n_models):
            f = fishers[i].to(device=engine.device, dtype=torch.float32) * w[i]
            scales.append(torch.where(has_mass, f.div_(den), w[i]))
        return _FisherParts(w, scales, engine.layout)


class _FisherParts(SlotParts):
    """Fisher's per-model maps: a flat per-weight scale per model."""

    def __init__(self, weights: Sequence[float], scales: list[torch.Tensor], layout: Any) -> None:
        super().__init__(weights)
        self.scales, self.layout = scales, layout

    def part(self, i: int, tensor: TensorSlot, x: torch.Tensor) -> torch.Tensor:
        start, end = self.layout.span(tensor.name)
        return x.double() * self.scales[i][start:end].view(x.shape)
