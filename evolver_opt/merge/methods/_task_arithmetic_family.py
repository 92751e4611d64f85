"""The task-arithmetic family: sparsify each task vector, elect a sign or not, sum, scale.

``merge = base + lambda * combine_i(v_i)``, per merged tensor, where ``v_i`` is model i's task
vector ``tau_i = theta_i - base`` weighted by ``w_i`` and sparsified, and

* ``sparsification`` is ``None`` (every entry kept), ``"magnitude"`` (TIES's trim: each
  weighted task vector keeps its ``round(density * numel)`` largest-magnitude entries) or
  ``"random"`` (DARE's drop-and-rescale: ``round(density * numel)`` entries drawn by a
  generator seeded from (seed, model index, tensor index), scaled by ``1 / density``, then
  weighted);
* ``consensus`` is ``None`` (``combine`` is the sum) or ``"sign"`` (TIES's election: per entry
  the sign of ``sum_i v_i``; ``combine`` is the mean of the non-zero ``v_i`` that agree with it,
  the disjoint mean).

==================  ==============  =========
member              sparsification  consensus
==================  ==============  =========
``task_arithmetic`` None            None
``ties``            magnitude       sign
``dare``            random          None
``dare_ties``       random          sign
==================  ==============  =========

The member without either is linear in the models (a coefficient array, separable per model);
the others are sums of per-task parts (:meth:`TaskArithmeticFamily.task_parts`), so study forms.
Where the weights enter follows each paper, and keeps the members' results what they were
when they were separate classes, bit for bit: magnitude trims the weighted task vectors, random
drops from the unweighted ones and weights what it kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch

from evolver_opt.errors import ConfigError
from evolver_opt.merge.methods._base import (
    MergeMethod,
    SlotParts,
    check_density,
    check_scale,
    keep_count,
    model_weights,
    task_vectors,
)

if TYPE_CHECKING:
    from evolver_opt.merge.engine import MergeEngine, TensorSlot

Sparsification = Literal["magnitude", "random"] | None
Consensus = Literal["sign"] | None

# The dev grid of the sparse members (DARE's adds its seed).
SPARSE_GRID = tuple(
    {"density": d, "lambda": lam}
    for d in (0.1, 0.2, 0.4, 0.6, 0.8)
    for lam in (0.6, 0.8, 1.0, 1.2, 1.5)
)
DARE_SEED = 0


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


def mask_generator(seed: int, model: int, tensor: int) -> torch.Generator:
    """DARE's generator for model ``model``'s mask of merged tensor ``tensor``."""
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


def _agreement(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TIES's election over stacked vectors ``(N, ...)``: which entries agree with the sign of
    their sum (zeros never do), and how many per entry (at least 1)."""
    elected = torch.sign(v.sum(dim=0))
    agree = (torch.sign(v) == elected) & (v != 0)
    return agree, agree.sum(dim=0).clamp(min=1)


def disjoint_mean(v: torch.Tensor) -> torch.Tensor:
    """The mean, per entry, of the stacked ``v`` that agree with the elected sign."""
    agree, count = _agreement(v)
    return (v * agree).sum(dim=0) / count


def disjoint_parts(v: torch.Tensor) -> torch.Tensor:
    """Each vector's share of :func:`disjoint_mean` (the shares sum to it)."""
    agree, count = _agreement(v)
    return v * agree / count


class TaskArithmeticFamily(MergeMethod):
    """A member of the family: subclasses set ``sparsification`` and ``consensus`` besides the
    usual ``name``, ``url``, ``params`` and ``grid``; the member with neither declares
    ``linear`` and ``separable``."""

    sparsification: ClassVar[Sparsification] = None
    consensus: ClassVar[Consensus] = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        corner = (cls.sparsification, cls.consensus)
        if corner[0] not in (None, "magnitude", "random") or corner[1] not in (None, "sign"):
            raise ConfigError(f"{cls.__name__}: {corner} is not a task-arithmetic family member")
        if (corner == (None, None)) != cls.linear:
            raise ConfigError(f"{cls.__name__}: the plain sum, and only it, is linear")

    @classmethod
    def has_parts(cls) -> bool:
        return not cls.linear  # the plain sum's parts are the coefficient form itself

    # -- the plain sum (task arithmetic): linear -----------------------------------------
    def coefficients(
        self,
        engine: MergeEngine,
        weights: Sequence[float] | None = None,
        lambda_: float = 1.0,
    ) -> np.ndarray:
        if not self.linear:
            return super().coefficients(engine)
        if not np.isfinite(lambda_):
            raise ConfigError(f"lambda={lambda_} must be finite")
        w = model_weights(weights, engine.n_models, normalize=False)
        return np.repeat((float(lambda_) * w)[:, None], engine.n_groups, axis=1)

    def slot_parts(
        self, engine: MergeEngine, weights: Sequence[float] | None = None, lambda_: float = 1.0
    ) -> SlotParts:
        if not self.separable:
            return super().slot_parts(engine)
        return _Scaled(self.coefficients(engine, weights, lambda_)[:, 0])

    # -- the sparse or elected members ---------------------------------------------------
    def task_parts(
        self,
        engine: MergeEngine,
        density: float = 0.2,
        weights: Sequence[float] | None = None,
        seed: int = DARE_SEED,
    ) -> Iterator[tuple[TensorSlot, torch.Tensor]]:
        with torch.no_grad():
            for slot, kept, w in self._sparsified(engine, density, weights, seed):
                v = kept if w is None else kept * _column(w, kept)
                yield slot, v if self.consensus is None else disjoint_parts(v)

    def write(
        self,
        engine: MergeEngine,
        density: float = 0.2,
        lambda_: float = 1.0,
        weights: Sequence[float] | None = None,
        seed: int = DARE_SEED,
    ) -> None:
        if self.linear:  # the coefficient array, applied
            super().write(engine, weights=weights, lambda_=lambda_)
            return
        scale = check_scale(lambda_)
        with torch.no_grad():
            for slot, kept, w in self._sparsified(engine, density, weights, seed):
                if self.consensus == "sign":
                    merged = disjoint_mean(kept if w is None else kept * _column(w, kept))
                else:  # the weighted sum, model by model
                    merged = torch.zeros_like(kept[0])
                    for i, part in enumerate(kept):
                        merged.add_(part, alpha=1.0 if w is None else w[i])
                slot.out.copy_(slot.base.float() + scale * merged)

    def _sparsified(
        self,
        engine: MergeEngine,
        density: float,
        weights: Sequence[float] | None,
        seed: int,
    ) -> Iterator[tuple[TensorSlot, torch.Tensor, list[float] | None]]:
        """Per merged tensor, the stacked sparsified task vectors and the weights still to
        apply to them (None: they are weighted already)."""
        density = check_density(density)
        w = model_weights(weights, engine.n_models, normalize=False).tolist()
        for j, slot in enumerate(engine.slots()):
            if self.sparsification == "magnitude":
                kept = torch.stack([trim_magnitude(t, density) for t in task_vectors(slot, w)])
                yield slot, kept, None
            elif self.sparsification == "random":
                kept = torch.stack([
                    drop_and_rescale(t, density, mask_generator(seed, i, j))
                    for i, t in enumerate(task_vectors(slot))
                ])  # fmt: skip
                yield slot, kept, w
            else:
                yield slot, task_vectors(slot), w


def _column(weights: list[float], like: torch.Tensor) -> torch.Tensor:
    """``weights`` shaped to scale the stacked ``(N, ...)`` tensor ``like`` model by model."""
    column = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
    return column.view(-1, *[1] * (like.dim() - 1))


class _Scaled(SlotParts):
    """``(1 - sum_i c_i) base + sum_i c_i theta_i``: the base's share is the constant."""

    def constant(self, tensor: TensorSlot) -> torch.Tensor | None:
        return tensor.base.double() * (1.0 - sum(self.weights))
