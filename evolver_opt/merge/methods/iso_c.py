"""Iso-C: isotropic merging in the common subspace (Marczak et al., 2025, arXiv 2502.04959).

Per 2-D tensor, the summed task matrix ``sum_i tau_i = U S V^T`` keeps its singular vectors
and gets a flat spectrum: every singular value replaced by their mean, ``mean(S) U V^T``
(sec. 3.1). Every other tensor gets the mean task vector. The result is scaled by ``lambda``.

The parts are ``1 / T`` of that merge each (the isotropic matrix has no per-task split), so
in a study with ``form = "iso_c"`` the coefficients act as a per-layer scale.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from evolver_opt.merge.methods._base import MergeMethod, is_matrix, task_vectors

if TYPE_CHECKING:
    from evolver_opt.merge.engine import MergeEngine, TensorSlot


def isotropic(matrix: torch.Tensor) -> torch.Tensor:
    """``matrix`` with every singular value replaced by their mean."""
    u, s, vt = torch.linalg.svd(matrix.double(), full_matrices=False)
    return (s.mean() * (u @ vt)).to(matrix.dtype)


class IsoC(MergeMethod):
    """``base + lambda * iso(sum_i tau_i)``; data-free."""

    name = "iso_c"
    url = "https://arxiv.org/abs/2502.04959"
    params = ("lambda_",)
    grid = tuple({"lambda": lam} for lam in (0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0))

    def task_parts(self, engine: MergeEngine) -> Iterator[tuple[TensorSlot, torch.Tensor]]:
        for slot in engine.slots():
            taus = task_vectors(slot)
            t = len(taus)
            merged = isotropic(taus.sum(dim=0)) if is_matrix(slot) else taus.mean(dim=0)
            yield slot, (merged / t).expand_as(taus).clone()
