"""TSV-M: task singular vectors, merged (Gargiulo et al., CVPR 2025, arXiv 2412.00081).

Per 2-D tensor, each task vector ``tau_i = U_i S_i V_i^T`` keeps its top ``k = r / T``
singular triplets (``r`` the smaller side, ``T`` the number of tasks, sec. 4); the kept
``U_i`` are stacked side by side and the ``V_i`` likewise, each stack replaced by its nearest
orthogonal matrix (its polar factor, ``P Q^T`` from the SVD ``P Sigma Q^T``: the
decorrelation of sec. 5), and the merged task vector is ``U_perp diag(S_1..S_T) V_perp^T``.
Every other tensor gets the mean task vector, and so does a matrix whose smaller side is below
``T`` (``r / T`` rounds to no triplet; FusionBench's TSV-M merges it to zero, e.g. BERT's
two-row token-type embeddings). The result is scaled by ``lambda``.

Task ``i``'s part is its own block ``U_perp[:, i] S_i V_perp[:, i]^T`` (others: ``tau_i / T``),
so the merge is their sum and a study with ``form = "tsv_m"`` searches per (task, layer)
weights of them, TSV-M itself being the point where every weight is ``lambda``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from evolver_opt.merge.methods._base import MergeMethod, is_matrix, task_vectors

if TYPE_CHECKING:
    from evolver_opt.merge.engine import MergeEngine, TensorSlot


def polar_factor(a: torch.Tensor) -> torch.Tensor:
    """The orthogonal matrix nearest to ``a`` (Frobenius): ``P Q^T`` of its thin SVD."""
    p, _, qt = torch.linalg.svd(a, full_matrices=False)
    return p @ qt


def tsv_parts(taus: torch.Tensor) -> torch.Tensor:
    """Each task's block of the TSV-M merge of the 2-D task vectors ``taus`` ``(T, m, n)``."""
    t, m, n = taus.shape
    k = min(m, n) // t
    if k < 1:
        raise ValueError(f"a {m} x {n} matrix has no top-{min(m, n)}/{t} singular triplets")
    u, s, vt = torch.linalg.svd(taus.double(), full_matrices=False)  # batched over tasks
    u, s, vt = u[:, :, :k], s[:, :k], vt[:, :k, :]
    u_perp = polar_factor(torch.cat(list(u), dim=1))  # (m, T k)
    v_perp = polar_factor(torch.cat(list(vt.transpose(1, 2)), dim=1))  # (n, T k)
    parts = torch.empty_like(taus)
    for i in range(t):
        block = slice(i * k, (i + 1) * k)
        parts[i] = ((u_perp[:, block] * s[i]) @ v_perp[:, block].T).to(taus.dtype)
    return parts


class TsvM(MergeMethod):
    """``base + lambda * TSV-M(tau_1..tau_T)``; data-free."""

    name = "tsv_m"
    url = "https://arxiv.org/abs/2412.00081"
    params = ("lambda_",)
    grid = tuple({"lambda": lam} for lam in (0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0))

    def task_parts(self, engine: MergeEngine) -> Iterator[tuple[TensorSlot, torch.Tensor]]:
        for slot in engine.slots():
            taus = task_vectors(slot)
            factorized = is_matrix(slot) and min(slot.shape) >= len(taus)
            yield slot, tsv_parts(taus) if factorized else taus / len(taus)
