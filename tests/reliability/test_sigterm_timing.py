"""SIGTERM at the two instants where raising at once would lose track of a trial: just after
the storage created it (inside ``ask``) and just before its value is stored (inside ``tell``).
The signal is sent by the storage call itself, so the instant is exact on any machine."""

from __future__ import annotations

import os
import signal

import pytest
from optuna.trial import TrialState

from evolver_opt.runtime.signals import Terminated
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
