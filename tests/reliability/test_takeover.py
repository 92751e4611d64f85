"""Fault 2: another process fails a trial while its worker still evaluates it.

Stock Optuna 5.0 crashes the worker here (``ValueError: Cannot tell a FAIL trial``) and the
value it computed is lost. Our worker loop keeps it: it completes the re-queued retry with it
(no second evaluation), or, without a retry, adds a COMPLETE copy of the trial.
"""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from evolver_opt import EvolverSampler, offspring_info, open_storage
from evolver_opt.runtime.rescue import KEY_RESCUED
from evolver_opt.runtime.worker import WorkerLoop
from tests.reliability._synthetic_worker import objective_for, open_synthetic
from tests.reliability.conftest import ROOT

FAIL_FROM_OUTSIDE = """
import sys, optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from evolver_opt import open_storage
url, name, number, requeue = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
storage = open_storage(url, heartbeat_interval=None)
study = optuna.load_study(study_name=name, storage=storage)
trial = study.trials[number]
assert trial.state == TrialState.RUNNING, trial.state
assert storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
if requeue:  # what the heartbeat's fail_stale_trials does in another worker
    RetryHeartbeatStaleTrialCallback(max_retry=3)(study, storage.get_trial(trial._trial_id))
"""


def _taken_over_objective(url: str, name: str, victim: int, requeue: bool, calls: list):
    inner = objective_for()

    def objective(trial: optuna.Trial) -> float:
        value = inner(trial)
        calls.append(trial.params)
        if trial.number == victim:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            cmd = [
                sys.executable,
                "-c",
                FAIL_FROM_OUTSIDE,
                url,
                name,
                str(victim),
                str(int(requeue)),
            ]
            subprocess.run(cmd, check=True, env=env, timeout=120)
            trial.set_user_attr("merge_s", 0.5)  # set after the takeover: kept, not lost
        return value

    return objective


@pytest.mark.parametrize("requeue", [True, False], ids=["retry-requeued", "no-retry"])
def test_value_of_a_trial_failed_by_another_process_is_kept(sqlite_url, requeue):
    victim, calls = 7, []
    study = open_synthetic(sqlite_url, "s", heartbeat=None)
    objective = _taken_over_objective(sqlite_url, "s", victim, requeue, calls)
    WorkerLoop(study, objective, n_trials=12).run()  # does not crash
    trials = study.get_trials(deepcopy=False)
    lost = trials[victim]
    assert lost.state == TrialState.FAIL
    (kept,) = [t for t in trials if t.user_attrs.get(KEY_RESCUED) == victim]
    assert kept.state == TrialState.COMPLETE and kept.params == lost.params
    assert kept.value == pytest.approx(objective_for()(optuna.trial.FixedTrial(lost.params)))
    assert kept.user_attrs["merge_s"] == 0.5
    assert offspring_info(kept) == offspring_info(lost)  # same lineage: same offspring
    assert kept.system_attrs["failed_trial"] == victim
    assert calls.count(lost.params) == 1, "the kept value is not evaluated a second time"
    assert len([t for t in trials if t.state != TrialState.WAITING]) == 13  # 12 + the lost one
    # The population uses the kept value: its slot holds the best of the slot's COMPLETE trials.
    info = EvolverSampler(seed=0).population_info(study)
    slot = offspring_info(kept).slot
    members = [
        t for t in trials if t.state == TrialState.COMPLETE and (o := offspring_info(t))
        and o.slot == slot
    ] + [trials[slot]]  # fmt: skip
    assert info["slots"][slot]["value"] == pytest.approx(min(t.value for t in members))


def test_stock_optuna_crashes_and_loses_the_value_here(sqlite_url):
    """Why the loop exists: the same fault under ``study.optimize``."""
    study = open_synthetic(sqlite_url, "s", heartbeat=None)
    objective = _taken_over_objective(sqlite_url, "s", 5, True, [])
    with pytest.raises(ValueError, match="Cannot tell a FAIL trial"):
        study.optimize(objective, n_trials=10)
    stock = optuna.load_study(study_name="s", storage=open_storage(sqlite_url))
    assert all(t.value is None for t in stock.trials if t.params == stock.trials[5].params)
