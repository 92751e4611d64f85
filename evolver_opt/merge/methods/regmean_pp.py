"""RegMean++: RegMean with the inputs of each layer taken from the merged model below it
(Nguyen et al., 2025, arXiv 2508.03121).

RegMean (``regmean.py``) merges each linear layer ``W`` by
``W^T = (sum_i G~_i)^-1 sum_i G~_i W_i^T``, with ``G_i`` the Gram matrix of the layer's
inputs when model ``i`` runs alone on its own examples. RegMean++ merges block by block
(a transformer block, then the tensors outside any block) and computes block ``l``'s ``G_i``
from model ``i``'s examples run through the already merged tensors below ``l`` and model
``i``'s own tensors from ``l`` up, so each layer is fitted to the inputs the merged model
will give it. Everything that is not a merged linear weight gets the mean task vector.
On a model with one block and nothing below it, RegMean++ is RegMean.

Task ``i``'s part of a linear layer is ``((sum_j G~_j)^-1 G~_i tau_i^T)^T``; they sum to
the merge, so ``form = "regmean_pp"`` searches per (task, layer) weights around it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from evolver_opt.errors import ConfigError
from evolver_opt.merge.groups import block_of
from evolver_opt.merge.methods._base import MergeMethod, task_vectors
from evolver_opt.merge.methods._examples import Examples, per_model
from evolver_opt.merge.methods.regmean import gram_matrices, linear_layers, regression_parts

if TYPE_CHECKING:
    from evolver_opt.merge.engine import MergeEngine, TensorSlot


class RegMeanPlusPlus(MergeMethod):
    """RegMean++ over ``examples`` (model name -> batches); ``alpha`` scales off-diagonals."""

    name = "regmean_pp"
    url = "https://arxiv.org/abs/2508.03121"
    params = ("examples", "alpha", "lambda_")
    data = "examples"
    merger = False  # its Gram matrices depend on the merge itself: no per-slot statistics

    def task_parts(
        self, engine: MergeEngine, examples: Examples | None = None, alpha: float = 0.9
    ) -> Iterator[tuple[TensorSlot, torch.Tensor]]:
        if not 0.0 <= float(alpha) <= 1.0:
            raise ConfigError(f"alpha={alpha} must be in [0, 1]")
        lists = per_model(engine, examples)
        layers = linear_layers(engine)
        grams: dict[str, list[torch.Tensor]] = {}
        with torch.no_grad():
            for slot in engine.slots():
                taus = task_vectors(slot)
                if slot.name not in layers:
                    parts = taus / len(taus)
                else:
                    if slot.name not in grams:
                        block = block_of(slot.name)
                        wanted = {n: v for n, v in layers.items() if block_of(n) == block}
                        grams.update(_grams_from_merged(engine, slot, wanted, lists))
                    found = grams.pop(slot.name, None)  # None: no input reached the layer
                    transposed = layers[slot.name][1]
                    parts = (
                        taus / len(taus)
                        if found is None
                        else regression_parts(taus, found, float(alpha), transposed)
                    )
                slot.out.copy_(slot.base.float() + parts.sum(dim=0))  # the model above reads it
                yield slot, parts


def _grams_from_merged(
    engine: MergeEngine, first: TensorSlot, layers: dict, lists: list[list]
) -> dict[str, list[torch.Tensor]]:
    """Each model's Gram matrices of ``layers``, the working model holding the merge written
    so far below ``first`` and that model's own tensors from ``first`` on."""
    start = engine.layout.span(first.name)[0]
    merged_below = engine.output[:start].clone()
    out: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    for i, batches in enumerate(lists):
        engine.output[start:].copy_(engine.stacked[i + 1, start:])
        if not engine.heads_merged:
            engine.use_head(i)
        for name, gram in gram_matrices(engine, layers, batches).items():
            out[name].append(gram)
    engine.output[:start].copy_(merged_below)
    return {name: grams for name, grams in out.items() if len(grams) == len(lists)}
