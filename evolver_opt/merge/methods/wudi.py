"""WUDI: data-free merging guided by the task vectors (Cheng et al., ICML 2025, arXiv 2503.08099).

Per linear (2-D) tensor the merged task vector minimises the interference each task's own
update would see on its inputs, whose span the task vector approximates (sec. 4):
``L(tau) = sum_i ||(tau - tau_i) tau_i^T||^2 / ||tau_i||^2``. Every other tensor gets the sum
of the task vectors, the paper's starting point. The result is scaled by ``lambda`` (the
paper uses 1).

``L`` is quadratic: with ``G_i = tau_i^T tau_i / ||tau_i||^2`` and ``G = sum_i G_i``, its
gradient is ``2 (tau G - sum_i tau_i G_i)``. Two solvers:

* ``closed_form`` (default): the minimiser reached by gradient flow from ``sum_i tau_i``,
  ``tau* = (sum_i tau_i G_i) G^+`` (every row of every ``tau_i`` lies in the range of ``G``,
  so the start point adds nothing outside it); one eigendecomposition per tensor;
* ``adam``: the paper's procedure, Adam from ``sum_i tau_i`` (``steps`` 300, ``lr`` 1e-5),
  run on the gradient above with the ``G_i`` formed once, so a step is one
  ``(m x n) (n x n)`` product instead of the per-task ``(m x n) (n x m)`` ones.

Parts: ``closed_form`` gives task ``i`` the part ``tau_i G_i G^+``; ``adam`` gives it
``tau_i`` plus ``1 / T`` of the correction Adam made to the sum. Either way they sum to the
merge, so ``form = "wudi"`` searches per (task, layer) weights around it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import torch

from evolver_opt.errors import ConfigError
from evolver_opt.merge.methods._base import MergeMethod, is_matrix, task_vectors

if TYPE_CHECKING:
    from evolver_opt.merge.engine import MergeEngine, TensorSlot

SOLVERS = ("closed_form", "adam")


def interference_grams(taus: torch.Tensor) -> torch.Tensor:
    """``G_i = tau_i^T tau_i / ||tau_i||^2`` for ``taus`` ``(T, m, n)``, in float64; a zero
    task vector gives a zero matrix."""
    x = taus.double()
    norms = x.square().sum(dim=(1, 2)).clamp(min=torch.finfo(torch.float64).tiny)
    return x.transpose(1, 2) @ x / norms.view(-1, 1, 1)


def wudi_loss(tau: torch.Tensor, taus: torch.Tensor) -> float:
    """``sum_i ||(tau - tau_i) tau_i^T||^2 / ||tau_i||^2`` (the paper's objective)."""
    x = taus.double()
    grams = interference_grams(x)  # ||D tau_i^T||^2 / ||tau_i||^2 = <D G_i, D>: (m x n) memory
    diff = tau.double().unsqueeze(0) - x
    return float(((diff @ grams) * diff).sum())


def closed_form_parts(taus: torch.Tensor, rcond: float = 1e-10) -> torch.Tensor:
    """``tau_i G_i G^+`` for each task: the parts of the minimiser reached from the sum."""
    grams = interference_grams(taus)
    evals, evecs = torch.linalg.eigh(grams.sum(dim=0))
    keep = evals > rcond * evals.max().clamp(min=torch.finfo(torch.float64).tiny)
    inv = (evecs[:, keep] / evals[keep]) @ evecs[:, keep].T  # G^+ on its range
    return (taus.double() @ grams @ inv).to(taus.dtype)


def adam_solution(taus: torch.Tensor, steps: int, lr: float) -> torch.Tensor:
    """Adam on ``L`` from ``sum_i tau_i`` (float32, like the paper), with the Gram form."""
    grams = interference_grams(taus).float()
    total = grams.sum(dim=0)
    target = (taus.float() @ grams).sum(dim=0)  # sum_i tau_i G_i
    tau = taus.float().sum(dim=0).clone().requires_grad_(True)
    opt = torch.optim.Adam([tau], lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=False)
        with torch.no_grad():
            tau.grad = 2.0 * (tau @ total - target)
        opt.step()
    return tau.detach()


class Wudi(MergeMethod):
    """``base + lambda * wudi(tau_1..tau_T)``; data-free; ``solver`` closed_form or adam."""

    name = "wudi"
    url = "https://arxiv.org/abs/2503.08099"
    params = ("lambda_", "solver", "steps", "lr")
    grid = tuple({"lambda": lam} for lam in (0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6))

    def task_parts(
        self,
        engine: MergeEngine,
        solver: Literal["closed_form", "adam"] = "closed_form",
        steps: int = 300,
        lr: float = 1e-5,
    ) -> Iterator[tuple[TensorSlot, torch.Tensor]]:
        if solver not in SOLVERS:
            raise ConfigError(f"solver={solver!r} is not one of {list(SOLVERS)}")
        if int(steps) < 0 or not float(lr) > 0:
            raise ConfigError(f"steps={steps} must be >= 0 and lr={lr} > 0")
        with torch.no_grad():
            for slot in engine.slots():
                taus = task_vectors(slot)
                if not is_matrix(slot):
                    yield slot, taus
                elif solver == "closed_form":
                    yield slot, closed_form_parts(taus)
                else:
                    with torch.enable_grad():
                        solution = adam_solution(taus, int(steps), float(lr))
                    correction = (solution - taus.sum(dim=0)) / len(taus)
                    yield slot, taus + correction
