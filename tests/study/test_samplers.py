"""Samplers by name: the CMA-ES variants run relative (not independent) sampling in bounds."""

from __future__ import annotations

import optuna
import pytest

from evolver_opt.errors import ConfigError
from evolver_opt.study.samplers import make_sampler


@pytest.mark.parametrize("name", ["cmaes", "cmaes-sep"])
def test_cma_samplers_sample_relative_inside_the_bounds(name):
    x0 = {f"x{i}": 0.25 for i in range(6)}
    study = optuna.create_study(sampler=make_sampler(name, seed=0, x0=x0), direction="maximize")
    study.optimize(
        lambda t: -sum((t.suggest_float(k, 0.0, 1.0) - 0.6) ** 2 for k in x0), n_trials=25
    )
    key = {"cmaes": "cma:generation", "cmaes-sep": "sepcma:generation"}[name]
    relative = [t for t in study.trials if key in t.system_attrs]
    assert len(relative) >= 24  # every trial after the first comes from CMA-ES itself
    assert max(t.system_attrs[key] for t in relative) >= 1  # it told a generation
    assert all(0.0 <= v <= 1.0 for t in study.trials for v in t.params.values())


def test_unknown_sampler_lists_the_names():
    with pytest.raises(ConfigError, match="unknown sampler 'cma'.*cmaes-sep"):
        make_sampler("cma", seed=0)
