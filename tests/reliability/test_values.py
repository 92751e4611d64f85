"""Bad results: FAIL, PRUNED and NaN mid-search (5), every trial failing (7), inf and NaN (8)."""

from __future__ import annotations

import math
import threading
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from evolver_opt import ConfigError, EvolverSampler, offspring_info
from evolver_opt.runtime.worker import WorkerLoop
from tests.reliability._synthetic_worker import objective_for, open_synthetic


def test_fail_pruned_and_nan_mid_search_neither_stall_nor_double_count(sqlite_url):
    inner = objective_for()

    def objective(trial: optuna.Trial) -> float:
        value = inner(trial)
        if trial.number % 5 == 4:
            raise RuntimeError("injected failure")
        if trial.number % 7 == 6:
            raise optuna.TrialPruned()
        return float("nan") if trial.number % 9 == 8 else value

    study = open_synthetic(sqlite_url, "s", heartbeat=None)
    loop = WorkerLoop(study, objective, n_trials=40, max_consecutive_failures=5)
    assert loop.run() == 40
    trials = study.trials
    assert len(trials) == 40  # the budget counts each bad trial once; nothing re-runs
    states = [t.state for t in trials]
    assert states.count(TrialState.PRUNED) >= 4 and states.count(TrialState.FAIL) >= 10
    assert all(trials[n].state == TrialState.FAIL for n in range(8, 40, 9) if n % 7 != 6)
    indices = [offspring_info(t).index for t in trials if offspring_info(t) is not None]
    assert indices == list(range(36))  # one offspring per trial, in order: no stall
    info = EvolverSampler(seed=0).population_info(study)
    assert all(trials[s["trial"]].state == TrialState.COMPLETE for s in info["slots"])
    assert "injected failure" in trials[4].system_attrs["fail_reason"]


def test_every_trial_failing_stops_with_a_clear_error(sqlite_url):
    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("w0", 0, 1)
        raise FileNotFoundError("expert checkpoint vanished")

    study = open_synthetic(sqlite_url, "s", heartbeat=None)
    with pytest.raises(ConfigError, match=r"5 trials failed in a row \(last: trial 4: "
                       r"FileNotFoundError: expert checkpoint vanished\)"):  # fmt: skip
        WorkerLoop(study, objective, n_trials=100, max_consecutive_failures=5).run()
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 5  # bounded: no 6th trial


def test_nan_fails_and_inf_never_enters_the_population(sqlite_url):
    inner = objective_for()

    def objective(trial: optuna.Trial) -> float:
        value = inner(trial)
        return {5: float("nan"), 6: float("-inf")}.get(trial.number, value)

    study = open_synthetic(sqlite_url, "s", heartbeat=None)
    WorkerLoop(study, objective, n_trials=12).run()
    assert study.trials[5].state == TrialState.FAIL  # NaN: FAIL
    # inf: Optuna stores it (COMPLETE, value -inf); EvolverSampler treats it as lost, so a
    # minimizing search is not captured by it (documented in integrations/_population.py).
    assert study.trials[6].state == TrialState.COMPLETE and study.trials[6].value == -math.inf
    info = EvolverSampler(seed=0).population_info(study)
    assert all(math.isfinite(s["value"]) for s in info["slots"])
    assert 6 not in {s["trial"] for s in info["slots"]}


@pytest.mark.parametrize("score", [float("nan"), float("inf")])
def test_merge_objective_rejects_non_finite_scores(score, monkeypatch):
    """The merge objective fails the trial (ConfigError) on any non-finite dev score."""
    from evolver_opt.search import objective as objective_module

    setup = SimpleNamespace(
        config=SimpleNamespace(
            bounds=(0.0, 1.0), racing=False, metric="accuracy", pruner=SimpleNamespace(name="none")
        ),
        param_names=["w0"],
        engine=SimpleNamespace(apply=lambda c, form=None: None),
        coefficients=lambda params: params,
        apply=lambda params: None,
        head_of={},
        lock=threading.Lock(),
    )
    result = SimpleNamespace(score=score, n_seen=4, stopped_early=False, per_split={}, logprob=None)
    monkeypatch.setattr(objective_module, "evaluate_dev", lambda s, stop_below=None, **_: result)
    trial = optuna.create_study().ask()
    with pytest.raises(ConfigError, match=f"dev score is {score!r}; expected a finite number"):
        objective_module.MergeObjective(setup)(trial)
