"""DARE: drop task-vector entries at random, rescale the rest, then add (Yu et al. 2024).

"Language Models are Super Mario", sec. 3: keep a fraction ``density`` (= 1 - p) of each
task vector and scale kept entries by ``1 / density``. Here exactly
``round(density * numel)`` entries are kept per tensor, chosen by a generator seeded from
(seed, model index, tensor index), so a merge is reproducible and independent of order.
The task-arithmetic family with random sparsification and no consensus
(``_task_arithmetic_family.py``).
"""

from __future__ import annotations

from evolver_opt.merge.methods._task_arithmetic_family import (
    DARE_SEED,
    SPARSE_GRID,
    TaskArithmeticFamily,
)


class Dare(TaskArithmeticFamily):
    """``base + lambda * sum_i w_i * dare(tau_i)``, seeded."""

    name = "dare"
    url = "https://arxiv.org/abs/2311.03099"
    params = ("density", "lambda_", "weights", "seed")
    reference = True
    grid = tuple({**p, "seed": DARE_SEED} for p in SPARSE_GRID)
    sparsification = "random"
