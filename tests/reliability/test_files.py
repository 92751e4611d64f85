"""Files: a JournalStorage log with a torn last line (11)."""

from __future__ import annotations

import json
import logging

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from evolver_opt import EvolverSampler, open_storage
from evolver_opt.runtime.worker import WorkerLoop
from tests.reliability._synthetic_worker import objective_for

TORN = {
    "no-final-newline": b'{"op_code": 5, "worker_id": "x", "trial_id": 8, "sta',
    "not-json": b'{"op_code": 5, "worker_id": "x", "trial_id": 8, "sta\n',
}


@pytest.mark.parametrize("kind", list(TORN))
def test_journal_with_a_torn_last_line_is_repaired_and_keeps_every_trial(
    journal_path, kind, caplog
):
    """Stock Optuna 5.0 skips the torn line on read, then glues the next operation onto it:
    that operation is lost and ``ask`` raises AttributeError. ``open_storage`` cuts the torn
    tail off first (under the journal's lock), keeps the bytes in ``.torn`` and warns."""
    url = f"journal:{journal_path}"
    study = optuna.create_study(
        study_name="s", storage=open_storage(url), sampler=EvolverSampler(seed=0, population_size=4)
    )
    WorkerLoop(study, objective_for(), n_trials=8).run()
    before = [(t.number, t.state, t.value) for t in study.trials]
    with open(journal_path, "rb") as f:
        intact = f.read()
    with open(journal_path, "ab") as f:  # a writer killed in the middle of a line
        f.write(TORN[kind])
    with caplog.at_level(logging.WARNING, logger="evolver_opt.runtime.storage"):
        storage = open_storage(url)
    assert f"journal {journal_path} ends with a torn line ({len(TORN[kind])} bytes" in caplog.text
    with open(journal_path + ".torn", "rb") as f:
        assert f.read() == TORN[kind]  # the cut bytes are kept
    with open(journal_path, "rb") as f:
        assert f.read() == intact  # nothing but the torn line was cut
    again = optuna.load_study(
        study_name="s", storage=storage, sampler=EvolverSampler(seed=0, population_size=4)
    )
    assert [(t.number, t.state, t.value) for t in again.trials] == before
    WorkerLoop(again, objective_for(), n_trials=12).run()  # later writes are not corrupted
    with open(journal_path, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    assert all(line.endswith(b"\n") and json.loads(line) for line in lines)
    stock = optuna.load_study(
        study_name="s", storage=JournalStorage(JournalFileBackend(journal_path))
    )
    assert [t.state for t in stock.trials] == [TrialState.COMPLETE] * 12
    assert [(t.number, t.state, t.value) for t in stock.trials[:8]] == before


def test_intact_journal_is_left_alone(journal_path, caplog):
    url = f"journal:{journal_path}"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    with open(journal_path, "rb") as f:
        intact = f.read()
    with caplog.at_level(logging.WARNING):
        open_storage(url)
    assert "torn" not in caplog.text
    with open(journal_path, "rb") as f:
        assert f.read() == intact
