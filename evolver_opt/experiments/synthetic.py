"""Synthetic problems shaped like merge search, for the demo, tests and benchmarks.

D = N x G coefficients in [0, 1] (N models, G groups), all minimized:

* ``merge``: each group has a hidden best mix of the model corners (a sparse random convex
  combination); the loss is the mean squared distance to it plus a coupling term between
  neighbouring groups (a merge is judged as a whole, not group by group);
* ``sphere`` and ``rastrigin`` (shifted into the box) as sanity checks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import optuna

from evolver_opt.core.genome import Genome

PROBLEMS = ("merge", "sphere", "rastrigin")


def genome(n_models: int, n_groups: int) -> Genome:
    """Models ``m0, m1, ...`` x groups ``g000, g001, ...``."""
    return Genome(
        tuple(f"m{i}" for i in range(n_models)), tuple(f"g{g:03d}" for g in range(n_groups))
    )


def loss_function(
    kind: str, n_models: int, n_groups: int, seed: int = 1234
) -> Callable[[np.ndarray], float]:
    """``loss(c)`` for an N x G coefficient matrix ``c``."""
    rng = np.random.default_rng(seed)
    if kind == "merge":
        weights = rng.dirichlet(np.full(n_models, 0.5), size=n_groups).T

        def merge(c: np.ndarray) -> float:
            diff = c - weights
            group = np.mean(np.sum(diff**2, axis=0))
            smooth = (
                np.mean(np.sum((diff[:, 1:] - diff[:, :-1]) ** 2, axis=0)) if n_groups > 1 else 0.0
            )
            return float(group + 0.3 * smooth)

        return merge
    center = rng.uniform(0.2, 0.8, size=(n_models, n_groups))
    if kind == "sphere":
        return lambda c: float(np.mean((c - center) ** 2))
    if kind == "rastrigin":

        def rastrigin(c: np.ndarray) -> float:
            z = 5.12 * (c - center)
            return float(np.mean(z**2 - 10 * np.cos(2 * np.pi * z) + 10))

        return rastrigin
    raise ValueError(f"unknown problem {kind!r}; expected one of {', '.join(PROBLEMS)}")


def objective(kind: str, n_models: int, n_groups: int) -> Callable[[optuna.Trial], float]:
    """An Optuna objective suggesting one float per coefficient."""
    layout = genome(n_models, n_groups)
    loss = loss_function(kind, n_models, n_groups)

    def run(trial: optuna.Trial) -> float:
        return loss(layout.matrix([trial.suggest_float(n, 0.0, 1.0) for n in layout.param_names]))

    return run
