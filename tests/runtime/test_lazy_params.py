"""A resumed process reads a large study's parameters lazily: the trials it builds are the
trials stock Optuna builds, it reads parameter rows only for the trials whose parameters are
used, and EvolverSampler's next point is the one an eager read gives."""

from __future__ import annotations

import copy
import pickle
import sqlite3

import optuna
import pytest

from evolver_opt import EvolverSampler, flush_params, open_storage
from evolver_opt.integrations import _base
from evolver_opt.runtime import lazy_params, trial_reader
from evolver_opt.runtime.batched_storage import BatchedRDBStorage
from evolver_opt.runtime.lazy_params import LazyParamsTrial

optuna.logging.set_verbosity(optuna.logging.ERROR)
N_PARAMS = 12


def objective(trial: optuna.Trial) -> float:
    x = [trial.suggest_float(f"x{j:02d}", 0.0, 1.0) for j in range(N_PARAMS)]
    flush_params(trial)
    if trial.number % 7 == 3:
        raise optuna.TrialPruned()
    return sum((v - 0.3) ** 2 for v in x)


def grow(url: str, n_trials: int, name: str = "s") -> None:
    study = optuna.create_study(
        study_name=name,
        storage=open_storage(url, heartbeat_interval=None),
        sampler=EvolverSampler(population_size=6, seed=1),
    )
    study.enqueue_trial({f"x{j:02d}": 0.5 for j in range(N_PARAMS)})
    study.optimize(objective, n_trials=n_trials)


def param_loads(monkeypatch) -> list[list[int]]:
    """Records the trial ids of every lazy parameter read."""
    calls: list[list[int]] = []
    read = BatchedRDBStorage._read_params

    def counting(self, trial_ids):
        calls.append(list(trial_ids))
        return read(self, trial_ids)

    monkeypatch.setattr(BatchedRDBStorage, "_read_params", counting)
    return calls


@pytest.fixture
def url(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    monkeypatch.setattr(_base, "CHECKPOINT_EVERY", 10)  # the search space's checkpoint
    grow(url, 40)
    monkeypatch.setattr(trial_reader, "LAZY_MIN", 10)
    return url


def _lazy_trials(url: str, name: str = "s") -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    return study.get_trials(deepcopy=False)


def test_a_large_read_defers_params_then_reads_one_trial_at_a_time_then_the_rest(url, monkeypatch):
    monkeypatch.setattr(lazy_params, "BULK_AFTER", 3)
    loads = param_loads(monkeypatch)
    trials = _lazy_trials(url)
    stock = optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)
    assert len(trials) == 40 and all(isinstance(t, LazyParamsTrial) for t in trials)
    assert not any("_params" in t.__dict__ for t in trials) and loads == []
    for k in (5, 9, 30):
        assert trials[k].params == stock[k].params
        assert list(trials[k].distributions) == list(stock[k].distributions)
    assert loads == [[trials[5]._trial_id], [trials[9]._trial_id], [trials[30]._trial_id]]
    assert sum("_params" in t.__dict__ for t in trials) == 3
    assert trials[0].distributions == stock[0].distributions  # the 4th: all the rest at once
    assert len(loads) == 4 and len(loads[-1]) == 37
    assert [t.params for t in trials] == [t.params for t in stock]
    assert len(loads) == 4


def test_lazy_trials_equal_copy_pickle_and_print_as_stock_trials(url):
    stock = optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)
    assert _lazy_trials(url) == stock
    assert stock == _lazy_trials(url)  # the reflected comparison too
    for make_copy in (copy.copy, copy.deepcopy, lambda t: pickle.loads(pickle.dumps(t))):
        copies = [make_copy(t) for t in _lazy_trials(url)]
        assert all(type(c) is optuna.trial.FrozenTrial for c in copies)
        assert copies == stock
    assert [repr(t) for t in _lazy_trials(url)] == [repr(t) for t in stock]
    assert optuna.load_study(study_name="s", storage=open_storage(url)).trials == stock


def test_postgresql_lazy_trials_equal_stock_trials(postgres_url, unique_name, monkeypatch):
    grow(postgres_url, 15, unique_name)
    monkeypatch.setattr(trial_reader, "LAZY_MIN", 10)
    monkeypatch.setattr(lazy_params, "BULK_AFTER", 3)
    loads = param_loads(monkeypatch)
    try:
        stock = optuna.load_study(study_name=unique_name, storage=postgres_url).trials
        lazy = _lazy_trials(postgres_url, unique_name)
        assert all(isinstance(t, LazyParamsTrial) for t in lazy)
        assert lazy == stock
        assert [len(ids) for ids in loads] == [1, 1, 1, 12]  # then the rest at once
    finally:
        optuna.delete_study(study_name=unique_name, storage=postgres_url)


def test_small_reads_stay_eager(url, monkeypatch):
    monkeypatch.setattr(trial_reader, "LAZY_MIN", 41)
    trials = _lazy_trials(url)
    assert not any(isinstance(t, LazyParamsTrial) for t in trials)


def _copy_database(tmp_path) -> str:
    with sqlite3.connect(tmp_path / "a.db") as src, sqlite3.connect(tmp_path / "eager.db") as dst:
        src.backup(dst)  # the WAL's content too
    return f"sqlite:///{tmp_path / 'eager.db'}"


def _next_point(url: str) -> dict:
    """What a fresh process's EvolverSampler draws next."""
    study = optuna.load_study(
        study_name="s", storage=open_storage(url), sampler=EvolverSampler(population_size=6, seed=1)
    )
    trial = study.ask()
    objective(trial)
    return trial.params


def test_a_resumed_evolver_reads_its_population_only_and_draws_what_an_eager_read_draws(
    url, tmp_path, monkeypatch
):
    monkeypatch.setattr(lazy_params, "BULK_AFTER", 1000)
    eager_url = _copy_database(tmp_path)
    loads = param_loads(monkeypatch)
    lazy_point = _next_point(url)
    read = {i for call in loads for i in call}
    # the population's best per slot, the enqueued point, the trials after the checkpoint
    assert 0 < len(read) <= 6 + 1 + 10
    monkeypatch.setattr(trial_reader, "LAZY_MIN", 10**9)
    assert _next_point(eager_url) == lazy_point


def test_trials_of_other_samplers_are_not_read_to_tell_whether_they_have_params(
    url, tmp_path, monkeypatch
):
    study = optuna.load_study(
        study_name="s", storage=open_storage(url), sampler=optuna.samplers.RandomSampler(seed=0)
    )
    study.optimize(objective, n_trials=25)  # no Evolver lineage: start points if they have params
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)  # finished, without params
    study.sampler = EvolverSampler(population_size=6, seed=1)
    study.optimize(objective, n_trials=20)  # the search-space checkpoint moves past them
    monkeypatch.setattr(lazy_params, "BULK_AFTER", 1000)
    eager_url = _copy_database(tmp_path)
    loads = param_loads(monkeypatch)
    trials = _lazy_trials(url)
    assert not isinstance(trials[65], LazyParamsTrial) and trials[65].params == {}
    lazy_point = _next_point(url)
    read = {i for call in loads for i in call}
    assert 0 < len(read) <= 6 + 1 + 10  # not the 25 trials of RandomSampler
    monkeypatch.setattr(trial_reader, "LAZY_MIN", 10**9)
    assert _next_point(eager_url) == lazy_point
