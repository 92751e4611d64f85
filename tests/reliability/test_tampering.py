"""Fault 9: sampler state tampered with in the database is refused, never unpickled or run."""

from __future__ import annotations

import base64
import json
import os
import pickle

import optuna
import pytest
import sqlalchemy

from evolver_opt import EvolverSampler, StateError, open_storage
from evolver_opt.runtime.worker import WorkerLoop
from tests.reliability._synthetic_worker import objective_for, open_synthetic


class _Exploit:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _payloads(marker: str) -> dict[str, str]:
    raw = pickle.dumps(_Exploit(marker))
    return {
        "not-json": "{lineage: broken",
        "wrong-schema": '{"index": "seven", "role": "offspring", "slot": 0, "trial": 5}',
        "pickle-base64": '"' + base64.b64encode(raw).decode() + '"',
        "pickle-latin1": json.dumps(raw.decode("latin-1")),
    }


@pytest.mark.parametrize("kind", ["not-json", "wrong-schema", "pickle-base64", "pickle-latin1"])
def test_tampered_lineage_is_refused_and_never_executed(sqlite_url, tmp_path, kind):
    marker = tmp_path / "pwned"
    study = open_synthetic(sqlite_url, "s", heartbeat=None)
    WorkerLoop(study, objective_for(), n_trials=8).run()
    engine = sqlalchemy.create_engine(sqlite_url)
    with engine.begin() as conn:  # what anyone with write access to the database can do
        conn.execute(
            sqlalchemy.text(
                "UPDATE trial_system_attributes SET value_json = :v "
                "WHERE key = 'evolver:lineage' AND trial_id = "
                "(SELECT trial_id FROM trials WHERE number = 6)"
            ),
            {"v": _payloads(str(marker))[kind]},
        )
    engine.dispose()
    fresh = optuna.load_study(
        study_name="s", storage=open_storage(sqlite_url), sampler=EvolverSampler(seed=0)
    )
    expected = "not valid JSON" if kind == "not-json" else "malformed evolver:lineage"
    with pytest.raises(StateError, match=expected):
        WorkerLoop(fresh, objective_for(), n_trials=12).run()
    assert not marker.exists(), "a pickle payload was executed"
    with sqlalchemy.create_engine(sqlite_url).connect() as conn:
        states = [r[0] for r in conn.exec_driver_sql("SELECT state FROM trials ORDER BY number")]
    # Refused at the first draw: no trial completed or left RUNNING after the tampering.
    assert states.count("COMPLETE") == 8 and "RUNNING" not in states
