"""ReplayCmaEsSampler: no pickle read or written, exact resume, convergence, Optuna's suites."""

from __future__ import annotations

import contextlib
import json
import math
import pickle
import re
import sqlite3
from pathlib import Path

import numpy as np
import optuna
import pytest
from cmaes import CMA, SepCMA
from optuna.distributions import FloatDistribution
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    RelativeSamplerTestCase,
    SingleOnlySamplerTestCase,
)
from optuna.trial import TrialState

from evolver_opt import ReplayCmaEsSampler
from evolver_opt.integrations.cma import KEY_GENERATION, KEY_GENERATION_SEP, _ask
from evolver_opt.search.samplers import make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)
TARGET = np.linspace(0.2, 0.8, 6)
HEX_PICKLE = re.compile(r"80[0-5][0-9a-f]{20,}")  # what pickle.dumps(...).hex() starts with


class TestReplayCmaEsConformance(
    BasicSamplerTestCase, RelativeSamplerTestCase, SingleOnlySamplerTestCase
):
    @pytest.fixture(params=[False, True], ids=["full", "sep"])
    def sampler(self, request):
        return lambda: ReplayCmaEsSampler(seed=0, separable=request.param)


def _quadratic(trial: optuna.Trial) -> float:
    x = np.array([trial.suggest_float(f"w{j}", 0.0, 1.0) for j in range(len(TARGET))])
    return float(np.sum((x - TARGET) ** 2))


def _enqueue_start_points(study: optuna.Study) -> None:
    for i in range(4):
        study.enqueue_trial({f"w{j}": float(j % 4 == i) for j in range(len(TARGET))})
    study.enqueue_trial({f"w{j}": 0.25 for j in range(len(TARGET))})


def _params(study: optuna.Study) -> list[tuple[float, ...]]:
    return [tuple(t.params[k] for k in sorted(t.params)) for t in study.trials]


class _Plant:
    """Unpickling this opens (creates) ``path``: a stand-in for any code an attacker runs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _plant_pickle(db: Path, trial_id: int, key: str, marker: Path) -> None:
    """Write ``key`` = a hex pickle on a finished trial, as anyone with the database can."""
    payload = pickle.dumps(_Plant(marker)).hex()
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "INSERT INTO trial_system_attributes (trial_id, key, value_json) VALUES (?, ?, ?)",
            (trial_id, key, json.dumps(payload)),
        )
    pickle.loads(bytes.fromhex(payload)).close()  # the payload is live ...
    assert marker.exists()
    marker.unlink()  # ... and the marker is gone again before the study resumes


def _planted_study(tmp_path: Path, name: str, key: str) -> tuple[str, Path]:
    db, marker = tmp_path / "s.db", tmp_path / "code-ran"
    url = f"sqlite:///{db}"
    study = optuna.create_study(study_name="s", storage=url, sampler=make_sampler(name, seed=0))
    study.optimize(_quadratic, n_trials=12)
    _plant_pickle(db, study.trials[-1]._trial_id, key, marker)
    return url, marker


@pytest.mark.parametrize(
    ("name", "key"), [("cmaes", "cma:optimizer:0"), ("cmaes-sep", "sepcma:optimizer:0")]
)
def test_a_planted_pickle_is_never_loaded_and_the_study_continues(tmp_path, name, key):
    url, marker = _planted_study(tmp_path, name, key)
    storage = optuna.storages.RDBStorage(url)  # a new process: nothing cached
    study = optuna.load_study(study_name="s", storage=storage, sampler=make_sampler(name, seed=0))
    study.optimize(_quadratic, n_trials=12)
    assert not marker.exists()
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 24
    generation = KEY_GENERATION_SEP if name == "cmaes-sep" else KEY_GENERATION
    assert all(generation in t.system_attrs for t in study.trials[12:])


def test_the_same_plant_runs_code_under_optunas_own_sampler(tmp_path):
    """Shows the test above can fail: Optuna's CmaEsSampler unpickles the plant."""
    url, marker = _planted_study(tmp_path, "cmaes", "cma:optimizer:0")
    with pytest.warns(UserWarning, match="unpickles"):
        sampler = make_sampler("optuna-cmaes-unsafe-pickle", seed=0)
    study = optuna.load_study(study_name="s", storage=url, sampler=sampler)
    with contextlib.suppress(Exception):  # the "optimizer" it loads is a file object
        study.optimize(_quadratic, n_trials=1)
    assert marker.exists()


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@pytest.mark.parametrize("separable", [False, True])
def test_storage_holds_plain_json_and_no_optimizer_attributes(tmp_path, separable):
    db = tmp_path / "s.db"
    sampler = ReplayCmaEsSampler(seed=3, separable=separable, x0={f"w{j}": 0.25 for j in range(6)})
    study = optuna.create_study(storage=f"sqlite:///{db}", sampler=sampler)
    _enqueue_start_points(study)
    study.optimize(_quadratic, n_trials=60)

    key = KEY_GENERATION_SEP if separable else KEY_GENERATION
    assert sampler.generation_key == key
    assert {k for t in study.trials for k in t.system_attrs} == {key, "fixed_params"}
    assert [t.system_attrs[key] for t in study.trials[:5]] == [0] * 5  # start points join gen 0
    assert max(t.system_attrs[key] for t in study.trials) >= 3
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT key, value_json FROM trial_system_attributes UNION ALL "
            "SELECT key, value_json FROM study_system_attributes"
        ).fetchall()
    assert rows
    for k, raw in rows:
        assert not k.startswith(("cma:optimizer", "sepcma:optimizer"))
        value = json.loads(raw)
        assert json.loads(json.dumps(value)) == value
        assert not any(HEX_PICKLE.fullmatch(s) for s in _strings(value)), (k, raw[:80])


def _study(storage, sampler) -> optuna.Study:
    return optuna.create_study(study_name="s", storage=storage, sampler=sampler)


@pytest.mark.parametrize("separable", [False, True])
def test_interrupted_and_resumed_study_makes_the_same_trials(tmp_path, separable):
    def sampler():
        return ReplayCmaEsSampler(seed=7, separable=separable, sigma0=0.3)

    whole = _study(optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/a.db"), sampler())
    _enqueue_start_points(whole)
    whole.optimize(_quadratic, n_trials=40)

    url = f"sqlite:///{tmp_path}/b.db"
    first = _study(optuna.storages.RDBStorage(url), sampler())
    _enqueue_start_points(first)
    first.optimize(_quadratic, n_trials=17)  # stops inside a generation
    resumed = optuna.load_study(
        study_name="s", storage=optuna.storages.RDBStorage(url), sampler=sampler()
    )
    resumed.optimize(_quadratic, n_trials=23)

    assert _params(resumed) == _params(whole)
    assert len(set(_params(whole))) == 40  # and they are distinct draws

    again = _study(None, sampler())
    _enqueue_start_points(again)
    again.optimize(_quadratic, n_trials=40)
    assert _params(again) == _params(whole)
    other = _study(None, ReplayCmaEsSampler(seed=8, separable=separable, sigma0=0.3))
    _enqueue_start_points(other)
    other.optimize(_quadratic, n_trials=40)
    assert _params(other)[5:] != _params(whole)[5:]


@pytest.mark.parametrize("separable", [False, True])
def test_converges_on_a_bounded_quadratic_far_better_than_random(separable):
    cma = _study(None, ReplayCmaEsSampler(seed=0, separable=separable))
    cma.optimize(_quadratic, n_trials=150)
    random = _study(None, optuna.samplers.RandomSampler(seed=0))
    random.optimize(_quadratic, n_trials=150)
    # measured with seed 0: full 6.5e-3, separable 8.8e-4, random 5.5e-2
    assert cma.best_value < 0.02
    assert cma.best_value < random.best_value / 4


def test_maximize_and_non_finite_values():
    def objective(trial: optuna.Trial) -> float:
        loss = _quadratic(trial)
        return [float("nan"), float("inf")][trial.number % 2] if trial.number % 7 == 3 else -loss

    study = optuna.create_study(direction="maximize", sampler=ReplayCmaEsSampler(seed=1))
    study.optimize(objective, n_trials=150)
    assert max(t.system_attrs.get(KEY_GENERATION, 0) for t in study.trials) >= 10
    finite = [t.value for t in study.trials if t.value is not None and math.isfinite(t.value)]
    assert max(finite) > -0.02


@pytest.mark.parametrize("separable", [False, True])
def test_every_draw_respects_the_bounds_and_steps(separable):
    def objective(trial: optuna.Trial) -> float:
        a = trial.suggest_float("a", -3.0, 2.0)
        b = trial.suggest_float("b", 1e-4, 1.0, log=True)
        c = trial.suggest_float("c", 0.0, 1.0, step=0.25)
        d = trial.suggest_float("d", 10.0, 11.0)
        return (a - 5.0) ** 2 + math.log(b) ** 2 + c + (d - 10.0) ** 2  # optimum outside the box

    study = optuna.create_study(sampler=ReplayCmaEsSampler(seed=2, separable=separable))
    study.optimize(objective, n_trials=120)
    for t in study.trials:
        for name, value in t.params.items():
            assert t.distributions[name]._contains(value), (name, value)
            assert type(value) is float
    key = KEY_GENERATION_SEP if separable else KEY_GENERATION
    assert sum(key in t.system_attrs for t in study.trials) == 119  # all but the first
    assert study.best_params["a"] > 1.9


def test_a_multi_objective_study_is_refused_clearly():
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=ReplayCmaEsSampler())
    trial = study.ask()
    with pytest.raises(ValueError, match="single-objective"):
        study.sampler.sample_relative(
            study, trial._cached_frozen_trial, {"x": FloatDistribution(0, 1)}
        )


def test_non_float_parameters_go_to_the_independent_sampler():
    def objective(trial: optuna.Trial) -> float:
        k = trial.suggest_categorical("k", ["a", "b"])
        n = trial.suggest_int("n", 0, 3)
        return _quadratic(trial) + (k == "b") + n

    study = optuna.create_study(sampler=ReplayCmaEsSampler(seed=0, warn_independent_sampling=False))
    study.optimize(objective, n_trials=40)
    assert {t.params["k"] for t in study.trials} == {"a", "b"}
    assert max(t.system_attrs.get(KEY_GENERATION, 0) for t in study.trials) >= 2


@pytest.mark.parametrize("cls", [CMA, SepCMA])
@pytest.mark.parametrize(("dim", "sigma"), [(2, 0.05), (5, 0.3), (40, 0.3), (3, 3.0)])
def test_the_vectorized_ask_is_the_librarys_ask(cls, dim, sigma):
    bounds = np.tile([0.0, 1.0], (dim, 1))
    optimizer = cls(mean=np.full(dim, 0.4), sigma=sigma, bounds=bounds, n_max_resampling=10 * dim)
    for step in range(3):
        for seed in range(4):
            optimizer.reseed_rng(seed)
            expected = optimizer.ask()
            optimizer.reseed_rng(seed)
            np.testing.assert_allclose(_ask(optimizer), expected, rtol=0, atol=1e-12)
        solutions = [
            (x, float(np.sum(x**2)))
            for x in (optimizer.ask() for _ in range(optimizer.population_size))
        ]
        optimizer.tell(solutions)


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="sigma0"):
        ReplayCmaEsSampler(sigma0=0.0)
    with pytest.raises(ValueError, match="popsize"):
        ReplayCmaEsSampler(popsize=1)
