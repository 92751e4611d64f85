"""RegMean: merge linear layers by regression on their inputs (Jin et al. 2023).

For each linear layer ``y = x W^T`` (``nn.Linear``; GPT-2's ``Conv1D`` stores ``W^T``), model
i contributes the Gram matrix ``G_i = X_i^T X_i`` of the layer's inputs on its own examples;
the merged weight solves ``min_W sum_i ||X_i W^T - X_i W_i^T||^2``:
``W^T = (sum_i G~_i)^-1 sum_i G~_i W_i^T`` with ``G~ = alpha G + (1 - alpha) diag(G)``
(sec. 3.2, non-diagonal entries scaled by ``alpha``). All other parameters (biases, norms,
embeddings, tied or unseen layers) fall back to the weighted average.

The Gram matrices can be computed apart (:func:`expert_grams`, e.g. to cache them) and passed
back as ``grams``, one ``{weight name: G_i}`` per model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from evolver_opt.errors import ConfigError
from evolver_opt.merge.methods._base import MergeMethod, SlotParts, model_weights, task_vectors
from evolver_opt.merge.methods._examples import Examples, load_model, model_inputs, per_model

if TYPE_CHECKING:
    from evolver_opt.merge.engine import MergeEngine, TensorSlot


def linear_layers(engine: MergeEngine) -> dict[str, tuple[nn.Module, bool]]:
    """Merged, untied linear layers: weight name -> (module, stored transposed?)."""
    merged = {n for n in engine.layout.names if len(engine.plan.aliases[n]) == 1}
    found = {}
    for mod_name, mod in engine.model.named_modules():
        transposed = type(mod).__name__ == "Conv1D"
        if not (isinstance(mod, nn.Linear) or transposed):
            continue
        name = f"{mod_name}.weight"
        if name in merged:
            found[name] = (mod, transposed)
    return found


def _scaled_gram(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    diag = torch.diag(torch.diagonal(gram))
    return alpha * gram + (1.0 - alpha) * diag


def expert_grams(engine: MergeEngine, i: int, batches: Sequence) -> dict[str, torch.Tensor]:
    """Model ``i``'s Gram matrix (float64) of each merged linear layer's inputs on ``batches``,
    with its own head: weight name -> ``X^T X``."""
    load_model(engine, i)
    return _grams(engine, linear_layers(engine), batches)


def regression_parts(
    taus: torch.Tensor, grams: Sequence[torch.Tensor], alpha: float, transposed: bool
) -> torch.Tensor:
    """Each model's part ``(sum_j G~_j)^-1 G~_i tau_i^T`` of a linear layer's RegMean merge
    (float32, in the stored orientation; summed they give the merged task vector)."""
    scaled = [_scaled_gram(g.to(taus.device, torch.float64), alpha) for g in grams]
    total = sum(scaled)
    if not torch.diagonal(total).gt(0).any():
        return taus / len(taus)  # never saw an input: the average
    ridge = 1e-8 * torch.diagonal(total).mean() * torch.eye(len(total), dtype=total.dtype)
    inv = torch.linalg.inv(total + ridge.to(total.device))
    parts = torch.empty_like(taus)
    for i, (g, tau) in enumerate(zip(scaled, taus.double())):
        tau_t = tau if transposed else tau.t()
        part = inv @ (g @ tau_t)
        parts[i] = (part if transposed else part.t()).to(taus.dtype)
    return parts


def gram_matrices(
    engine: MergeEngine, layers: dict[str, tuple[nn.Module, bool]], batches: Sequence
) -> dict[str, torch.Tensor]:
    """Sum of ``x^T x`` (float64) over the inputs ``x`` of each of ``layers``, the working
    model as it is now."""
    return _grams(engine, layers, batches)


class RegMean(MergeMethod):
    """RegMean over ``examples`` (model name -> batches), or over precomputed ``grams`` (one
    :func:`expert_grams` per model); ``alpha`` scales off-diagonals."""

    name = "regmean"
    url = "https://arxiv.org/abs/2212.09849"
    params = ("examples", "weights", "alpha", "grams")
    data = "statistics"
    statistics_argument = "grams"
    separable = True

    def task_parts(
        self,
        engine: MergeEngine,
        examples: Examples | None = None,
        alpha: float = 0.9,
        grams: Sequence[Mapping[str, torch.Tensor]] | None = None,
    ) -> Iterator[tuple[TensorSlot, torch.Tensor]]:
        """Per-model parts of the (unweighted) merge: linear layers' regression parts, the
        mean task vector elsewhere (a study ``form``; :meth:`write` stays the exact solve)."""
        if grams is None:
            lists = per_model(engine, examples)
            grams = [expert_grams(engine, i, lists[i]) for i in range(engine.n_models)]
        layers = linear_layers(engine)
        with torch.no_grad():
            for slot in engine.slots():
                taus = task_vectors(slot)
                found = [g.get(slot.name) for g in grams] if slot.name in layers else []
                if found and all(g is not None for g in found):
                    yield slot, regression_parts(taus, found, float(alpha), layers[slot.name][1])
                else:
                    yield slot, taus / len(taus)

    def write(
        self,
        engine: MergeEngine,
        examples: Examples | None = None,
        weights: Sequence[float] | None = None,
        alpha: float = 0.9,
        grams: Sequence[Mapping[str, torch.Tensor]] | None = None,
    ) -> None:
        if not 0.0 <= float(alpha) <= 1.0:
            raise ConfigError(f"alpha={alpha} must be in [0, 1]")
        if grams is not None and len(grams) != engine.n_models:
            raise ConfigError(f"grams has {len(grams)} entries, expected {engine.n_models}")
        lists = per_model(engine, examples) if grams is None else None
        w = model_weights(weights, engine.n_models, normalize=True)
        layers = linear_layers(engine)
        sum_g: dict[str, torch.Tensor] = {}
        sum_gw: dict[str, torch.Tensor] = {}
        for i in range(engine.n_models):
            model_grams = expert_grams(engine, i, lists[i]) if lists is not None else grams[i]
            for name, gram in model_grams.items():
                mod, transposed = layers[name]
                weight = _model_weight(engine, i, name, mod.weight.shape).double()
                weight_t = weight if transposed else weight.t()
                g = _scaled_gram(gram.to(engine.device, torch.float64), float(alpha)) * w[i]
                sum_g[name] = sum_g.get(name, 0) + g
                sum_gw[name] = sum_gw.get(name, 0) + g @ weight_t
        engine.apply(np.repeat(w[:, None], engine.n_groups, axis=1))
        with torch.no_grad():
            for name, g in sum_g.items():
                if not torch.diagonal(g).gt(0).any():
                    continue  # never saw an input: keep the average
                ridge = 1e-8 * torch.diagonal(g).mean() * torch.eye(len(g), dtype=g.dtype)
                solved = torch.linalg.solve(g + ridge.to(g.device), sum_gw[name])
                mod, transposed = layers[name]
                mod.weight.copy_(solved if transposed else solved.t())

    def slot_parts(
        self,
        engine: MergeEngine,
        examples: Examples | None = None,
        weights: Sequence[float] | None = None,
        alpha: float = 0.9,
        grams: Sequence[Mapping[str, torch.Tensor]] | None = None,
    ) -> SlotParts:
        """:meth:`write` as per-model maps: ``L_i(W) = (sum_j w_j G~_j)^-1 w_i G~_i W^T`` on
        each linear layer (factorized once per layer here; float64, ``n_models x d_in^2`` per
        layer in memory), ``w_i W`` elsewhere."""
        if not 0.0 <= float(alpha) <= 1.0:
            raise ConfigError(f"alpha={alpha} must be in [0, 1]")
        if grams is None:
            lists = per_model(engine, examples)
            grams = [expert_grams(engine, i, lists[i]) for i in range(engine.n_models)]
        if len(grams) != engine.n_models:
            raise ConfigError(f"grams has {len(grams)} entries, expected {engine.n_models}")
        w = model_weights(weights, engine.n_models, normalize=True)
        layers = linear_layers(engine)

        def scaled(i: int) -> dict[str, torch.Tensor]:
            return {name: _scaled_gram(g.to(engine.device, torch.float64), float(alpha)) * w[i]
                    for name, g in grams[i].items()}  # fmt: skip

        total: dict[str, torch.Tensor] = {}
        for i in range(engine.n_models):
            for name, g in scaled(i).items():
                total[name] = g if name not in total else total[name].add_(g)
        factors = {}
        for name, g in total.items():
            if torch.diagonal(g).gt(0).any():  # else never saw an input: keep the average
                ridge = 1e-8 * torch.diagonal(g).mean() * torch.eye(len(g), dtype=g.dtype)
                factors[name] = torch.linalg.lu_factor(g + ridge.to(g.device))
        maps: list[dict[str, torch.Tensor]] = []
        for i in range(engine.n_models):
            found = scaled(i)
            maps.append({n: torch.linalg.lu_solve(*factors[n], found[n]) if n in found
                         else torch.zeros_like(total[n]) for n in factors})  # fmt: skip
        return _RegressionParts(w, maps, {n: layers[n][1] for n in factors})


class _RegressionParts(SlotParts):
    """RegMean's per-model maps: ``maps[i][layer]`` is ``(sum_j G~_j)^-1 G~_i`` (weighted)."""

    def __init__(
        self, weights: Sequence[float], maps: list[dict[str, torch.Tensor]],
        transposed: dict[str, bool],
    ) -> None:  # fmt: skip
        super().__init__(weights)
        self.maps, self.transposed = maps, transposed

    def part(self, i: int, tensor: TensorSlot, x: torch.Tensor) -> torch.Tensor:
        m = self.maps[i].get(tensor.name)
        if m is None:
            return super().part(i, tensor, x)
        if self.transposed[tensor.name]:
            return m @ x.double()
        return (m @ x.double().t()).t()


def _model_weight(engine: MergeEngine, i: int, name: str, shape: torch.Size) -> torch.Tensor:
    """Fine-tuned model ``i``'s exact (stacked-row) value of the merged tensor ``name``."""
    start, end = engine.layout.span(name)
    return engine.stacked[i + 1, start:end].view(shape)


def _grams(
    engine: MergeEngine, layers: dict[str, tuple[nn.Module, bool]], batches: Sequence
) -> dict[str, torch.Tensor]:
    """Sum of ``x^T x`` over the inputs ``x`` of each layer, the working model as it is."""
    grams: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Any:
        def record(_mod: nn.Module, inputs: tuple) -> None:
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double()
            grams[name] = grams.get(name, 0) + x.t() @ x

        return record

    handles = [mod.register_forward_pre_hook(hook(n)) for n, (mod, _) in layers.items()]
    try:
        with torch.no_grad():
            for batch in batches:
                engine.model(**model_inputs(batch, engine.device))
    finally:
        for h in handles:
            h.remove()
    return grams
