"""DARE-TIES: DARE's random drop-and-rescale, then TIES's sign election and disjoint mean.

Yu et al. 2024, "Language Models are Super Mario" (DARE), sec. 3, apply DARE before other
merges, TIES among them: each task vector keeps a random ``density`` fraction of its entries,
rescaled by ``1 / density`` (the masks of ``dare``: same seed, same masks), then Yadav et al.
2023, "TIES-Merging" (sec. 3), elect per entry the sign of the summed vectors and average the
non-zero entries that agree with it. The task-arithmetic family with random sparsification and
sign consensus (``_task_arithmetic_family.py``); DARE's parameters and dev grid.
"""

from __future__ import annotations

from evolver_opt.merge.methods.dare import Dare


class DareTies(Dare):
    """``base + lambda * ties_election(w_i * dare(tau_i))``, seeded."""

    name = "dare_ties"
    reference = False  # not one of compare's untuned reference rows
    consensus = "sign"
