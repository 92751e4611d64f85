"""What the core tests share: the sphere objective, an Optuna study over it, twin optimizers."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import optuna
from optuna.distributions import FloatDistribution

from evolver_opt.core.evolver import Evolver


def sphere(x: np.ndarray) -> float:
    """Squared distance from ``x`` to 0.3 in every coordinate."""
    return float(np.sum((x - 0.3) ** 2))


def enqueued_study(sampler: optuna.samplers.BaseSampler, dim: int) -> optuna.Study:
    """A new in-memory study with four start points enqueued: ``x{j} = 1`` where ``j % 4 == i``."""
    study = optuna.create_study(sampler=sampler)
    for i in range(4):
        study.enqueue_trial({f"x{j}": float(i == j % 4) for j in range(dim)})
    return study


def run_sphere(study: optuna.Study, n: int, dim: int) -> None:
    """Ask and tell ``n`` trials of :func:`sphere` over ``x0 .. x{dim-1}``, each in [0, 1]."""
    dist = {f"x{j}": FloatDistribution(0.0, 1.0) for j in range(dim)}
    for _ in range(n):
        trial = study.ask(dist)
        study.tell(trial, sphere(np.array(list(trial.params.values()))))


def assert_twins_agree(
    a: Evolver, b: Evolver, steps: int, objective: Callable[[np.ndarray], float] = sphere
) -> None:
    """Ask and tell both optimizers ``steps`` times: the same candidates, then the same state."""
    for _ in range(steps):
        ca, cb = a.ask(), b.ask()
        np.testing.assert_array_equal(ca.x, cb.x)
        a.tell(ca.index, objective(ca.x))
        b.tell(cb.index, objective(cb.x))
    assert a.state_dict() == b.state_dict()
