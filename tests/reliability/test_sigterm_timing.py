"""SIGTERM at the instants where raising at once would lose track of a trial: just after the
storage created it (inside ``ask``), just before its value is stored (inside ``tell``), in the
middle of a database call (a commit cut in half can leave SQLite's write lock held, so the
trial in flight could not be failed), and inside a finalizer (where Python ignores an
exception, so the signal would be lost). The signal is sent by the code at that instant
itself, so the instant is exact on any machine."""

from __future__ import annotations

import os
import signal
import time

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from evolver_opt import open_storage
from evolver_opt.runtime.signals import Terminated, sigterm_raises
from evolver_opt.runtime.worker import WorkerLoop
from tests.reliability._synthetic_worker import objective_for, open_synthetic


def _sigterm_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at the next bytecode


def test_sigterm_inside_ask_fails_and_requeues_the_new_trial(sqlite_url, monkeypatch):
    study = open_synthetic(sqlite_url, "s")
    WorkerLoop(study, objective_for(), n_trials=6).run()
    storage = study._storage._backend  # under Optuna's _CachedStorage
    create = storage._create_new_trial

    def create_then_sigterm(*args, **kwargs):
        created = create(*args, **kwargs)
        _sigterm_self()
        return created

    monkeypatch.setattr(storage, "_create_new_trial", create_then_sigterm)
    with pytest.raises(Terminated):
        WorkerLoop(study, objective_for(), n_trials=12).run()
    trials = study.get_trials(deepcopy=False)
    assert TrialState.RUNNING not in [t.state for t in trials]
    assert trials[6].state == TrialState.FAIL and "SIGTERM" in trials[6].system_attrs["fail_reason"]
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == 6]
    assert retry.state == TrialState.WAITING


def test_sigterm_inside_tell_keeps_the_value_then_stops(sqlite_url, monkeypatch):
    study = open_synthetic(sqlite_url, "s")
    storage = study._storage
    set_state = storage.set_trial_state_values

    def sigterm_then_set_state(trial_id, state, values=None):
        if state == TrialState.COMPLETE:
            _sigterm_self()
        return set_state(trial_id, state, values)

    monkeypatch.setattr(storage, "set_trial_state_values", sigterm_then_set_state)
    with pytest.raises(Terminated):
        WorkerLoop(study, objective_for(), n_trials=12).run()
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.COMPLETE and trials[0].value is not None  # stored
    assert [t.state for t in trials[1:]] == [TrialState.WAITING] * 3  # no next trial asked


def test_sigterm_mid_evaluation_fails_and_requeues_the_trial(sqlite_url):
    study = open_synthetic(sqlite_url, "s")
    evaluate = objective_for()

    def objective(trial):
        value = evaluate(trial)
        if trial.number == 6:
            _sigterm_self()  # in the objective's own code, outside the database layer
            _wait_for_the_signal()
        return value

    with pytest.raises(Terminated):
        WorkerLoop(study, objective, n_trials=12).run()
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials[:6]] == [TrialState.COMPLETE] * 6
    assert trials[6].state == TrialState.FAIL and "SIGTERM" in trials[6].system_attrs["fail_reason"]
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == 6]
    assert retry.state == TrialState.WAITING and retry.params == trials[6].params
    assert len(trials) == 8  # nothing asked after the signal


class _SigtermWhenCollected:
    def __del__(self) -> None:
        _sigterm_self()


def _wait_for_the_signal() -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.01)


def test_sigterm_inside_a_database_write_lets_it_finish_then_raises(sqlite_url):
    storage = open_storage(sqlite_url, heartbeat_interval=None)
    study = optuna.create_study(storage=storage, study_name="s")
    trial_id = study.ask()._trial_id

    def sigterm_mid_insert(conn, cursor, statement, *args):
        if statement.startswith("INSERT INTO trial_user_attributes"):
            _sigterm_self()  # the handler runs inside SQLAlchemy's execute, mid-transaction

    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", sigterm_mid_insert)
    with pytest.raises(Terminated), sigterm_raises():
        storage.set_trial_user_attr(trial_id, "score", 0.5)
        _wait_for_the_signal()
    sqlalchemy.event.remove(storage.engine, "before_cursor_execute", sigterm_mid_insert)
    assert storage.get_trial(trial_id).user_attrs == {"score": 0.5}  # the write was finished
    assert storage.set_trial_state_values(trial_id, TrialState.FAIL)  # and no lock is left


def test_sigterm_inside_a_finalizer_is_not_lost():
    with pytest.raises(Terminated), sigterm_raises():
        _SigtermWhenCollected()  # collected at once; an exception raised there is ignored
        _wait_for_the_signal()


def test_a_sigterm_held_back_when_the_block_ends_is_raised_there():
    with pytest.raises(Terminated), sigterm_raises():
        _SigtermWhenCollected()  # the block ends before the signal is delivered again
