"""Evolver's hyperparameters are declared once (``EvolverConfig``): the Optuna sampler, the
Nevergrad optimizer and a study file's ``[study.evolver]`` take the same names, defaults and
ranges, and a config object; stored study identities do not move."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from evolver_opt import EvolverConfig, EvolverSampler
from evolver_opt.core.config import HYPERPARAMETERS
from evolver_opt.integrations.nevergrad import NOT_USED, EvolverOptimizer
from evolver_opt.search.config import EvolverSettings


def _declared(cls) -> dict:
    params = inspect.signature(cls).parameters
    return {name: params[name].default for name in HYPERPARAMETERS if name in params}


def test_every_consumer_takes_the_configs_fields_with_its_defaults():
    defaults = EvolverConfig().options()
    assert _declared(EvolverSampler) == defaults
    assert _declared(EvolverOptimizer) == {k: v for k, v in defaults.items() if k not in NOT_USED}
    settings = EvolverSettings()
    assert list(EvolverSettings.model_fields) == ["population_size", *HYPERPARAMETERS, "tie_break"]
    assert {k: getattr(settings, k) for k in HYPERPARAMETERS} == defaults
    assert settings.config() == EvolverConfig()


def test_a_config_object_or_names_give_the_same_search():
    config = EvolverConfig(mutation="pbest", adapt="jde", F=0.7)
    assert EvolverSampler(config=config, seed=0).config == config
    assert EvolverSampler(seed=0, **config.options()).config == config
    assert EvolverSampler(config=config, CR=0.9, seed=0).config == dataclasses.replace(
        config, CR=0.9
    )
    assert EvolverOptimizer(config=EvolverConfig(mutation="de", F=0.8)) == EvolverOptimizer(
        mutation="de", F=0.8
    )
    assert repr(EvolverOptimizer(mutation="de", F=0.8)) == "EvolverOptimizer(F=0.8, mutation='de')"
    assert EvolverSettings(mutation="de", F=0.8).config() == EvolverConfig(mutation="de", F=0.8)


def test_ranges_come_from_the_config_and_unknown_names_are_refused():
    for bad in ({"F": 0.0}, {"CR": 1.5}, {"p_random": -0.1}, {"restart": 1.0}, {"p_best": 0.0}):
        with pytest.raises(ValueError):
            EvolverSettings(**bad)
        with pytest.raises(ValueError):
            EvolverSampler(**bad)
    with pytest.raises(TypeError, match="unexpected keyword argument.*G"):
        EvolverSampler(G=3)
    with pytest.raises(TypeError, match="unexpected keyword argument.*G"):
        EvolverOptimizer(G=3)
    with pytest.raises(ValueError, match="does not use bound_handling"):
        EvolverOptimizer(bound_handling="reflect")


def test_stored_settings_keep_the_first_studies_identity():
    assert EvolverSettings().stored() == {
        "population_size": None, "mutation": "interpolate", "F": 0.5, "CR": 0.5,
        "p_random": 0.5, "n_generations": None, "bound_handling": "clip",
    }  # fmt: skip
    assert EvolverSettings(adapt="jde", tie_break="dev_logprob").stored()["adapt"] == "jde"
