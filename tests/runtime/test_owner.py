"""A RUNNING trial's worker: failed at once when it is a dead process of this machine, left
to the heartbeat otherwise, and named when the budget counts it (issue 27, item 4)."""

from __future__ import annotations

import logging
import subprocess
import sys

import optuna
from optuna.trial import TrialState

from evolver_opt import open_storage
from evolver_opt.runtime.owner import ATTR_OWNER, is_orphaned, owner_record
from evolver_opt.runtime.worker import WorkerLoop

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _running(study: optuna.Study, record: object) -> optuna.trial.FrozenTrial:
    trial = study.ask()
    study._storage.set_trial_system_attr(trial._trial_id, ATTR_OWNER, record)
    return study._storage.get_trial(trial._trial_id)


def test_only_a_dead_process_of_this_machine_orphans_its_own_trial(tmp_path):
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    mine = owner_record(0)
    dead = {**mine, "pid": _dead_pid()}
    assert is_orphaned(_running(study, dead))  # trial 0, its worker gone
    assert not is_orphaned(_running(study, {**dead, "trial": 0}))  # a copied record (trial 1)
    assert not is_orphaned(_running(study, {**dead, "trial": 2, "host": "elsewhere"}))
    assert not is_orphaned(_running(study, {**dead, "trial": 3, "pidns": "pid:[1]"}))
    assert not is_orphaned(_running(study, {**mine, "trial": 4}))  # this very process
    parent = {**owner_record(5), "pid": 1, "start": None}
    assert not is_orphaned(_running(study, parent))  # no start time: not trusted
    for n, bad in enumerate(["x", [], {"trial": "6"}, {**dead, "pid": True}], start=6):
        assert not is_orphaned(
            _running(study, {**bad, "trial": n} if isinstance(bad, dict) else bad)
        )


def test_the_budget_names_running_trials_of_other_workers(tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(storage=open_storage(url, heartbeat_interval=10))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    elsewhere = {**owner_record(2), "host": "another-machine", "pid": _dead_pid()}
    running = _running(study, elsewhere)
    study._storage.record_heartbeat(running._trial_id)  # within its grace period
    with caplog.at_level(logging.WARNING, logger="evolver_opt.runtime.worker"):
        ran = WorkerLoop(study, lambda t: t.suggest_float("x", 0, 1), n_trials=3).run()
    assert ran == 0
    assert study._storage.get_trial(running._trial_id).state == TrialState.RUNNING
    assert "counts trial(s) 2, RUNNING in other workers" in caplog.text
    assert "silent for 20 s" in caplog.text
