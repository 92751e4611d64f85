"""EvolverSampler: Optuna's conformance suites, storage-backed state, exact resume, workers."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    RelativeSamplerTestCase,
    SingleOnlySamplerTestCase,
)
from optuna.trial import TrialState

from evolver_opt import EvolverSampler, StateError, offspring_info, open_storage
from evolver_opt.integrations.optuna_sampler import KEY_LINEAGE, KEY_POPULATION

optuna.logging.set_verbosity(optuna.logging.WARNING)
WORKER = Path(__file__).with_name("_worker.py")


class TestEvolverSamplerConformance(
    BasicSamplerTestCase, RelativeSamplerTestCase, SingleOnlySamplerTestCase
):
    @pytest.fixture
    def sampler(self):
        return lambda: EvolverSampler(seed=0, population_size=4)


def _objective(dim: int = 6, fail_every: int = 0, nan_every: int = 0, prune_every: int = 0):
    target = np.linspace(0.2, 0.8, dim)

    def objective(trial: optuna.Trial) -> float:
        x = np.array([trial.suggest_float(f"w{j}", 0.0, 1.0) for j in range(dim)])
        n = trial.number
        if fail_every and n % fail_every == fail_every - 1:
            raise RuntimeError("injected failure")
        if nan_every and n % nan_every == nan_every - 1:
            return float("nan")
        if prune_every and n % prune_every == prune_every - 1:
            raise optuna.TrialPruned()
        return float(np.sum((x - target) ** 2))

    return objective


def _enqueue_one_hots(study: optuna.Study, dim: int = 6, n: int = 4) -> None:
    for i in range(n):
        study.enqueue_trial({f"w{j}": float(j % n == i) for j in range(dim)})


def _complete_params(study: optuna.Study) -> list[tuple[float, ...]]:
    return [
        tuple(t.params[k] for k in sorted(t.params))
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ]


@pytest.fixture(params=["sqlite", "journal"])
def storage_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return f"journal:{tmp_path / 'journal.log'}"


def test_population_is_rebuilt_from_storage_by_a_new_process_object(storage_url):
    storage = open_storage(storage_url, heartbeat_interval=None)
    study = optuna.create_study(study_name="s", storage=storage, sampler=EvolverSampler(seed=1))
    _enqueue_one_hots(study)
    study.optimize(_objective(), n_trials=25)
    reference = optuna.load_study(study_name="s", storage=storage, sampler=EvolverSampler(seed=1))
    reference.optimize(_objective(), n_trials=10)
    # A sampler that never saw the first 25 trials continues exactly like the one that did.
    fresh_storage = open_storage(storage_url, heartbeat_interval=None)
    for name, sampler in (("a", EvolverSampler(seed=1)), ("b", EvolverSampler(seed=1))):
        s = optuna.create_study(study_name=name, storage=fresh_storage, sampler=sampler)
        _enqueue_one_hots(s)
        s.optimize(_objective(), n_trials=25)
    a = optuna.load_study(study_name="a", storage=fresh_storage, sampler=EvolverSampler(seed=1))
    a.optimize(_objective(), n_trials=10)
    assert _complete_params(a) == _complete_params(reference)
    info = EvolverSampler(seed=1).population_info(a)
    assert info["size"] == 4
    assert all(slot["value"] is not None for slot in info["slots"])


def test_lineage_is_json_in_trial_system_attrs_and_readable(sqlite_url):
    study = optuna.create_study(storage=open_storage(sqlite_url), sampler=EvolverSampler(seed=0))
    _enqueue_one_hots(study)
    study.optimize(_objective(), n_trials=12)
    offspring = [t for t in study.trials if offspring_info(t) is not None]
    assert len(offspring) == 8
    for t in offspring:
        info = offspring_info(t)
        assert info.role == "offspring"
        assert info.slot not in info.references
        assert info.parent_value is not None and math.isfinite(info.parent_value)
    # Greedy: each slot's value in the population never exceeds its initial value.
    info = EvolverSampler(seed=0).population_info(study)
    initial = [study.trials[i].value for i in range(4)]
    assert all(s["value"] <= initial[s["slot"]] for s in info["slots"])
    assert study.best_value == min(s["value"] for s in info["slots"])


def test_lost_offspring_never_stall_or_enter_population(sqlite_url):
    study = optuna.create_study(storage=open_storage(sqlite_url), sampler=EvolverSampler(seed=0))
    _enqueue_one_hots(study)
    study.optimize(
        _objective(fail_every=5, nan_every=7, prune_every=11), n_trials=60, catch=(RuntimeError,)
    )
    states = [t.state for t in study.trials]
    assert len(states) == 60
    assert states.count(TrialState.FAIL) >= 10 and states.count(TrialState.PRUNED) >= 4
    indices = [offspring_info(t).index for t in study.trials if offspring_info(t) is not None]
    assert indices == list(range(len(indices)))  # every offspring took one index, in order
    info = EvolverSampler(seed=0).population_info(study)
    complete = {t.number for t in study.trials if t.state == TrialState.COMPLETE}
    assert {s["trial"] for s in info["slots"]} <= complete


def test_threads_take_distinct_indices_and_targets(sqlite_url):
    study = optuna.create_study(storage=open_storage(sqlite_url), sampler=EvolverSampler(seed=0))
    _enqueue_one_hots(study, n=4)

    def slow(trial):
        value = _objective()(trial)
        time.sleep(0.02)
        return value

    study.optimize(slow, n_trials=40, n_jobs=4)
    indices = [offspring_info(t).index for t in study.trials if offspring_info(t) is not None]
    assert len(indices) == 36 and len(set(indices)) == 36
    for t in study.trials:  # an offspring never repeats its parent
        info = offspring_info(t)
        if info is not None and info.parent_trial is not None:
            assert t.params != study.trials[info.parent_trial].params


def test_same_seed_workers_in_separate_processes_differ(sqlite_url):
    storage_a = open_storage(sqlite_url, heartbeat_interval=None)
    storage_b = open_storage(sqlite_url, heartbeat_interval=None)
    study_a = optuna.create_study(study_name="x", storage=storage_a, sampler=EvolverSampler(seed=3))
    _enqueue_one_hots(study_a)
    study_a.optimize(_objective(), n_trials=4)
    study_b = optuna.load_study(study_name="x", storage=storage_b, sampler=EvolverSampler(seed=3))
    # Both workers ask before either tells (as two processes starting at once would).
    ta, tb = study_a.ask(), study_b.ask()
    xa = [ta.suggest_float(f"w{j}", 0, 1) for j in range(6)]
    xb = [tb.suggest_float(f"w{j}", 0, 1) for j in range(6)]
    assert xa != xb
    assert offspring_info(ta).index != offspring_info(tb).index


def test_float_only_other_distributions_warn_once(sqlite_url, caplog):
    study = optuna.create_study(
        storage=open_storage(sqlite_url), sampler=EvolverSampler(seed=0, population_size=3)
    )

    def objective(trial):
        trial.suggest_categorical("c", ["a", "b"])
        return trial.suggest_float("x", 0, 1)

    with caplog.at_level(logging.WARNING, logger="evolver_opt"):
        optuna.logging.enable_propagation()
        try:
            study.optimize(objective, n_trials=8)
        finally:
            optuna.logging.disable_propagation()
    warnings = [r for r in caplog.records if "float parameters only" in r.getMessage()]
    assert len(warnings) == 1 and "'c'" in warnings[0].getMessage()


@pytest.mark.parametrize(
    "value",
    [
        {"index": "not-an-int", "role": "offspring", "slot": 0, "trial": 5},
        {"role": "offspring"},
        "gASVCAAAAAAAAACMBHBvc2l4lC4=",  # a base64 pickle payload: refused, never unpickled
    ],
)
def test_tampered_trial_state_is_refused(sqlite_url, value):
    storage = open_storage(sqlite_url)
    study = optuna.create_study(storage=storage, sampler=EvolverSampler(seed=0))
    _enqueue_one_hots(study)
    study.optimize(_objective(), n_trials=6)
    _tamper_trial_attr(sqlite_url, study.trials[5]._trial_id, KEY_LINEAGE, value)
    fresh = optuna.load_study(
        study_name=study.study_name, storage=storage, sampler=EvolverSampler(seed=0)
    )
    with pytest.raises(StateError, match="malformed evolver:lineage"):
        fresh.optimize(_objective(), n_trials=1)


def _tamper_trial_attr(url: str, trial_id: int, key: str, value) -> None:
    """Overwrite a finished trial's system attribute behind Optuna's back, as an attacker would."""
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text(
                "UPDATE trial_system_attributes SET value_json = :v WHERE trial_id = :t AND key = :k"
            ),
            {"v": json.dumps(value), "t": trial_id, "k": key},
        )
    engine.dispose()


def test_tampered_population_attr_is_refused(sqlite_url):
    storage = open_storage(sqlite_url)
    study = optuna.create_study(storage=storage, sampler=EvolverSampler(seed=0))
    _enqueue_one_hots(study)
    study.optimize(_objective(), n_trials=6)
    storage.set_study_system_attr(study._study_id, KEY_POPULATION, {"size": "x"})
    fresh = optuna.load_study(
        study_name=study.study_name, storage=storage, sampler=EvolverSampler(seed=0)
    )
    with pytest.raises(StateError, match=KEY_POPULATION):
        fresh.optimize(_objective(), n_trials=1)


def test_random_population_without_enqueued_points(sqlite_url):
    study = optuna.create_study(
        storage=open_storage(sqlite_url), sampler=EvolverSampler(seed=0, n_startup_trials=5)
    )
    study.optimize(_objective(), n_trials=15)
    roles = [offspring_info(t).role for t in study.trials]
    assert roles == ["init"] * 5 + ["offspring"] * 10


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"population_size": 1}, "population_size=1"),
        ({"population_size": 4, "n_startup_trials": 2}, "not both"),
        ({"F": 0.0}, "F=0.0"),
        ({"mutation": "de", "population_size": 3}, "population_size >= 4"),
        ({"seed": -1}, "seed=-1"),
        ({"tie_break": ""}, "tie_break=''"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        EvolverSampler(**kwargs)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
@pytest.mark.parametrize("tie_break", [None, "secondary"])
def test_ties_keep_the_parent_unless_the_tie_break_attribute_is_better(
    sqlite_url, direction, tie_break
):
    """Every trial scores the same: without a tie-break an offspring never replaces its parent
    (strictly better only); with one, the offspring better on the attribute does."""
    study = optuna.create_study(
        direction=direction, storage=sqlite_url,
        sampler=EvolverSampler(seed=0, population_size=2, tie_break=tie_break),
    )  # fmt: skip
    _enqueue_one_hots(study, dim=2, n=2)
    better = 1.0 if direction == "maximize" else -1.0

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("w0", 0.0, 1.0)
        trial.suggest_float("w1", 0.0, 1.0)
        trial.set_user_attr("secondary", better * trial.number)  # later trials are better
        if trial.number == 5:
            trial.set_user_attr("secondary", float("nan"))  # unusable: never wins a tie
        return 1.0

    study.optimize(objective, n_trials=12)
    slots = [s["trial"] for s in study.sampler.population_info(study)["slots"]]
    if tie_break is None:
        assert slots == [0, 1]
        return
    lineages = {t.number: offspring_info(t) for t in study.trials}
    for slot, number in enumerate(slots):
        rivals = [n for n, lin in lineages.items() if lin and lin.slot == slot and n != 5]
        assert number == max([slot, *rivals]), (slot, number, rivals)


@pytest.mark.slow
def test_sigkill_and_resume_repeats_the_uninterrupted_run(tmp_path):
    """Exact resume: kill -9 mid-study, resume in a new process, same COMPLETE parameter sets."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}

    def worker(url: str, n: int, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, str(WORKER), url, "s", str(n), "0.01", *extra], env=env
        )

    straight = f"sqlite:///{tmp_path / 'straight.db'}"
    assert worker(straight, 60).wait(timeout=300) == 0

    killed = f"sqlite:///{tmp_path / 'killed.db'}"
    proc = worker(killed, 60, "33")  # trial 33 hangs mid-evaluation: it is killed there
    storage = open_storage(killed, heartbeat_interval=None)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            trials = storage.get_all_trials(storage.get_study_id_from_name("s"), deepcopy=False)
        except KeyError:
            trials = []
        if len(trials) > 33 and trials[33].state == TrialState.RUNNING and trials[33].params:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the worker ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Past the 2 s grace period (SQLite timestamps have 1 s resolution): the next worker fails
    # the stale trial and re-queues it with the same parameters and lineage.
    time.sleep(4.0)
    assert worker(killed, 60).wait(timeout=300) == 0

    a = optuna.load_study(study_name="s", storage=open_storage(straight, heartbeat_interval=None))
    b = optuna.load_study(study_name="s", storage=open_storage(killed, heartbeat_interval=None))
    states = [t.state for t in b.trials]
    assert states.count(TrialState.FAIL) == 1, states
    assert (
        b.trials[33].state == TrialState.FAIL
        and b.trials[34].system_attrs.get("failed_trial") == 33
    )
    assert len(_complete_params(b)) == 60
    assert _complete_params(a) == _complete_params(b)
