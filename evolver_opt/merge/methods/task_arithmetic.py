"""Task arithmetic: ``base + lambda * sum_i w_i * (theta_i - base)`` (Ilharco et al. 2023).

The task-arithmetic family's plain sum: no sparsification, no consensus
(``_task_arithmetic_family.py``); linear in the models, so a coefficient array.
"""

from __future__ import annotations

from evolver_opt.merge.methods._task_arithmetic_family import TaskArithmeticFamily


class TaskArithmetic(TaskArithmeticFamily):
    """Scaled sum of task vectors; weights default to 1 and lambda to 1."""

    name = "task_arithmetic"
    url = "https://arxiv.org/abs/2212.04089"
    linear = True
    reference = True
    grid = tuple({"lambda": round(0.1 * k, 1)} for k in range(1, 11))
    params = ("weights", "lambda_")
    separable = True
