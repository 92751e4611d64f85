"""Samplers by name: the CMA-ES variants run relative (not independent) sampling in bounds, and
Optuna's own (pickle-based) CmaEsSampler needs an explicit, warned name."""

from __future__ import annotations

import warnings

import optuna
import pytest

from evolver_opt import ReplayCmaEsSampler
from evolver_opt.errors import ConfigError
from evolver_opt.search import samplers
from evolver_opt.search.samplers import SAMPLER_NAMES, make_sampler


@pytest.mark.parametrize("name", ["cmaes", "cmaes-sep"])
def test_cma_samplers_sample_relative_inside_the_bounds(name):
    x0 = {f"x{i}": 0.25 for i in range(6)}
    sampler = make_sampler(name, seed=0, x0=x0)
    assert isinstance(sampler, ReplayCmaEsSampler)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    study.optimize(
        lambda t: -sum((t.suggest_float(k, 0.0, 1.0) - 0.6) ** 2 for k in x0), n_trials=25
    )
    key = {"cmaes": "cma:json:generation", "cmaes-sep": "sepcma:json:generation"}[name]
    relative = [t for t in study.trials if key in t.system_attrs]
    assert len(relative) >= 24  # every trial after the first comes from CMA-ES itself
    assert max(t.system_attrs[key] for t in relative) >= 1  # it told a generation
    assert all(0.0 <= v <= 1.0 for t in study.trials for v in t.params.values())
    assert not any(
        k.startswith(("cma:optimizer", "sepcma:optimizer"))
        for t in study.trials
        for k in t.system_attrs
    )


@pytest.mark.parametrize(
    ("name", "separable"),
    [("optuna-cmaes-unsafe-pickle", False), ("optuna-cmaes-sep-unsafe-pickle", True)],
)
def test_optunas_cma_sampler_only_by_its_unsafe_name_with_one_warning(monkeypatch, name, separable):
    assert name in SAMPLER_NAMES
    monkeypatch.setattr(samplers, "_warned_unsafe", False)
    with pytest.warns(UserWarning, match="unpickles .* anyone who can write the database"):
        sampler = make_sampler(name, seed=0)
    assert type(sampler) is optuna.samplers.CmaEsSampler
    assert sampler._use_separable_cma is separable
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_sampler(name, seed=0)
    assert not [w for w in caught if "unpickles" in str(w.message)]  # once per process


def test_unknown_sampler_lists_the_names():
    with pytest.raises(ConfigError, match="unknown sampler 'cma'.*cmaes-sep"):
        make_sampler("cma", seed=0)


def test_one_table_entry_adds_a_sampler(monkeypatch):
    """The table is the only list: a new entry is built by name, and a prefix entry
    (``NAME:ARG``) takes every name with its prefix; the listed names follow the table."""
    assert samplers.SAMPLER_NAMES == tuple(samplers.SAMPLERS)
    assert samplers.COEFFICIENT_EVOLVERS == ("evolver", "evolver-plus")

    def qmc(name, *, seed, **_):
        return optuna.samplers.QMCSampler(seed=seed, qmc_type=name.partition(":")[2] or "sobol")

    monkeypatch.setitem(samplers.SAMPLERS, "qmc", qmc)
    monkeypatch.setitem(samplers.SAMPLERS, "qmc:TYPE", qmc)
    assert type(make_sampler("qmc", seed=0)) is optuna.samplers.QMCSampler
    assert make_sampler("qmc:halton", seed=0)._qmc_type == "halton"
    with pytest.raises(ConfigError, match="unknown sampler 'qmcx'"):
        make_sampler("qmcx", seed=0)
    with pytest.raises(ConfigError, match="unknown sampler 'ng:'"):
        make_sampler("ng:", seed=0)
