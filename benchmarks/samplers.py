"""The benchmark's coefficient layout (N models x G groups) on top of evolver_opt's samplers."""

from __future__ import annotations

import optuna

from evolver_opt.experiments.synthetic import genome
from evolver_opt.search.samplers import make_sampler as _make_sampler

__all__ = ["SAMPLERS", "initial_points", "make_sampler"]

SAMPLERS = ("evolver", "cmaes", "random", "tpe", "ng:NGOpt", "ng:TwoPointsDE")


def initial_points(n_models: int, n_groups: int) -> list[dict[str, float]]:
    """Each model alone (one-hot in every group), then the uniform average."""
    return genome(n_models, n_groups).start_points()


def make_sampler(
    name: str, seed: int, n_models: int, n_groups: int, budget: int
) -> optuna.samplers.BaseSampler:
    """``name`` as the CLI takes it, or ``evolver[key=value;...]``: Evolver with those options
    (the ablation's rows, e.g. ``evolver[mutation=pbest;adapt=jde]``)."""
    if name.startswith("evolver[") and name.endswith("]"):
        return _make_sampler("evolver", seed=seed, evolver_options=parse_options(name[8:-1]))
    return _make_sampler(name, seed=seed, x0=initial_points(n_models, n_groups)[-1], budget=budget)


def parse_options(text: str) -> dict[str, object]:
    """``"a=1;b=x"`` -> ``{"a": 1, "b": "x"}`` (ints, floats, None and strings)."""
    out: dict[str, object] = {}
    for item in filter(None, text.split(";")):
        key, _, raw = item.partition("=")
        value: object = raw
        if raw == "None":
            value = None
        else:
            for kind in (int, float):
                try:
                    value = kind(raw)
                    break
                except ValueError:
                    pass
        out[key.strip()] = value
    return out
