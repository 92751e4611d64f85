"""The benchmark's coefficient layout (N models x G groups) on top of evolver_opt's samplers."""

from __future__ import annotations

import optuna

from evolver_opt.study.samplers import make_sampler as _make_sampler
from evolver_opt.study.synthetic import genome

__all__ = ["SAMPLERS", "initial_points", "make_sampler"]

SAMPLERS = ("evolver", "cmaes", "random", "tpe", "ng:NGOpt", "ng:TwoPointsDE")


def initial_points(n_models: int, n_groups: int) -> list[dict[str, float]]:
    """Each model alone (one-hot in every group), then the uniform average."""
    return genome(n_models, n_groups).start_points()


def make_sampler(
    name: str, seed: int, n_models: int, n_groups: int, budget: int
) -> optuna.samplers.BaseSampler:
    return _make_sampler(name, seed=seed, x0=initial_points(n_models, n_groups)[-1], budget=budget)
