"""Iso-CTS: isotropic merging in common and task-specific subspaces (Marczak et al., 2025,
arXiv 2502.04959, sec. 3.2).

Per 2-D tensor with ``r`` the smaller side: the top ``k`` singular directions of the summed
task matrix form the common subspace (``k ~ common_fraction * r``, rounded so the rest splits
evenly); each task adds its own top ``(r - k) / T`` directions of what its task vector holds
outside the common subspace. The joined left and right bases are orthogonalised (polar
factors) and every singular value set to the mean of the joined spectrum. Every other tensor
gets the mean task vector; the result is scaled by ``lambda``.

Task ``i``'s part is its own directions plus ``1 / T`` of the common ones, so the parts sum
to the merge (``form = "iso_cts"`` weighs each task's own subspace per layer).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from evolver_opt.errors import ConfigError
from evolver_opt.merge.methods._base import MergeMethod, is_matrix, task_vectors
from evolver_opt.merge.methods.tsv_m import polar_factor

if TYPE_CHECKING:
    from evolver_opt.merge.engine import MergeEngine, TensorSlot


def subspace_sizes(r: int, t: int, common_fraction: float) -> tuple[int, int]:
    """(common size, per-task size): the task-specific share divisible by ``t``."""
    per_task = round((r - int(r * common_fraction)) / t)
    per_task = max(0, min(per_task, r // t))
    return r - per_task * t, per_task


def iso_cts_parts(taus: torch.Tensor, common_fraction: float) -> torch.Tensor:
    """Each task's part of the Iso-CTS merge of the 2-D task vectors ``taus`` ``(T, m, n)``."""
    t, m, n = taus.shape
    x = taus.double()
    k, d = subspace_sizes(min(m, n), t, common_fraction)
    u, s, vt = torch.linalg.svd(x.sum(dim=0), full_matrices=False)
    us, ss, vs = [u[:, :k]], [s[:k]], [vt[:k].T]
    for i in range(t):
        outside = x[i] - u[:, :k] @ (u[:, :k].T @ x[i])
        ui, si, vti = torch.linalg.svd(outside, full_matrices=False)
        us.append(ui[:, :d])
        ss.append(si[:d])
        vs.append(vti[:d].T)
    u_perp = polar_factor(torch.cat(us, dim=1))
    v_perp = polar_factor(torch.cat(vs, dim=1))
    sigma = torch.cat(ss).mean()
    common = sigma * u_perp[:, :k] @ v_perp[:, :k].T / t
    parts = torch.empty_like(taus)
    for i in range(t):
        own = slice(k + i * d, k + (i + 1) * d)
        parts[i] = (common + sigma * u_perp[:, own] @ v_perp[:, own].T).to(taus.dtype)
    return parts


class IsoCTS(MergeMethod):
    """``base + lambda * iso_cts(tau_1..tau_T)``; data-free."""

    name = "iso_cts"
    url = "https://arxiv.org/abs/2502.04959"
    params = ("lambda_", "common_fraction")
    grid = tuple({"lambda": lam} for lam in (1.0, 1.4, 1.8, 2.2, 2.6, 3.0, 3.4, 3.8))

    def task_parts(
        self, engine: MergeEngine, common_fraction: float = 0.8
    ) -> Iterator[tuple[TensorSlot, torch.Tensor]]:
        if not 0.0 <= float(common_fraction) <= 1.0:
            raise ConfigError(f"common_fraction={common_fraction} must be in [0, 1]")
        for slot in engine.slots():
            taus = task_vectors(slot)
            if is_matrix(slot):
                yield slot, iso_cts_parts(taus, float(common_fraction))
            else:
                yield slot, taus / len(taus)
