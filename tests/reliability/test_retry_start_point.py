"""A killed start point: its heartbeat retry's value counts for the start point's slot."""

from __future__ import annotations

import signal
import time

from optuna.trial import TrialState

from evolver_opt import EvolverSampler
from tests.reliability._synthetic_worker import open_synthetic
from tests.reliability.conftest import synthetic_worker, trials_of


def test_retry_of_a_killed_start_point_fills_its_slot(sqlite_url):
    """Fault 1 on an enqueued start point: the worker is SIGKILLed while it evaluates start
    point 0; the next worker retries it (same parameters) and EvolverSampler's population takes
    the retry's value for slot 0 (it used to ignore retries of start points: slot 0 stayed
    empty and the expert it stands for was lost to the search)."""
    hung = synthetic_worker(sqlite_url, "s", 10, "hang-at", "0")
    deadline = time.monotonic() + 120
    while not any(t.state == TrialState.RUNNING and t.params for t in trials_of(sqlite_url, "s")):
        assert hung.poll() is None and time.monotonic() < deadline, "trial 0 never started"
        time.sleep(0.05)
    hung.send_signal(signal.SIGKILL)
    hung.wait()
    time.sleep(3.5)  # past the grace period (2 s; SQLite stores whole seconds)
    # Budget 4: the start points 1-3 and the retry of 0 (a retry counts with the trial it
    # retries), so no offspring can fill slot 0 and hide the retry being ignored.
    assert synthetic_worker(sqlite_url, "s", 4, "run").wait(timeout=300) == 0
    trials = trials_of(sqlite_url, "s")
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 4
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert retry.params == trials[0].params
    study = open_synthetic(sqlite_url, "s", heartbeat=None)
    info = EvolverSampler(seed=0).population_info(study)
    assert info["size"] == 4  # the 4 start points; the retry is not a fifth individual
    assert info["slots"][0] == {"slot": 0, "trial": retry.number, "value": retry.value}
    # The search goes on from it: the first offspring of slot 0 has the retry as its parent.
    assert synthetic_worker(sqlite_url, "s", 12, "run").wait(timeout=300) == 0
    children = [
        lin for t in trials_of(sqlite_url, "s")
        if (lin := t.system_attrs.get("evolver:lineage")) and lin["slot"] == 0
    ]  # fmt: skip
    assert children, "no offspring targeted slot 0"
    assert children[0]["parent_trial"] == retry.number
