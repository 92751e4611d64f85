"""Fault 12: the disk fills up while a worker writes its SQLite study.

"Full" is a real file-size limit (``RLIMIT_FSIZE``) on the worker process, with SIGXFSZ ignored,
so its writes past the limit fail with EFBIG exactly as they do with ENOSPC on a full disk.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time

import optuna
from optuna.trial import FixedTrial, TrialState

from tests.reliability._synthetic_worker import objective_for
from tests.reliability.conftest import ROOT, WORKER

HEADROOM = 256 * 1024  # what the worker may write past the database's size: a few trials


def _worker(url: str, n_trials: int, fsize_limit: int | None = None):
    def limit() -> None:  # runs in the child, before exec
        if fsize_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a core dump
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(WORKER), url, "s", str(n_trials), "run"]
    return subprocess.run(
        cmd, env=env, preexec_fn=limit, capture_output=True, text=True, timeout=300, check=False
    )


def _snapshot(trials):
    return [(t.number, t.state, t.value, t.params) for t in trials]


def test_disk_full_stops_clearly_keeps_trials_and_resumes(tmp_path):
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"
    assert _worker(url, 8).returncode == 0
    limit = db.stat().st_size + HEADROOM
    full = _worker(url, 500, fsize_limit=limit)
    assert full.returncode == 1, full.stderr
    assert "Traceback" not in full.stderr
    assert f"Error: storage {url}: could not " in full.stderr
    assert "The disk is full, a file size limit was reached or the disk failed (" in full.stderr
    assert f"bytes free in {tmp_path.resolve()};" in full.stderr
    assert f"file size limit (ulimit -f) {limit:,} bytes)" in full.stderr
    assert "free space and run the same command again to resume" in full.stderr

    # Finished trials are intact: stock Optuna (no evolver_opt storage) reads them back.
    stock = optuna.load_study(study_name="s", storage=url).trials
    complete = [t for t in stock if t.state == TrialState.COMPLETE]
    assert len(complete) > 8, "the worker wrote some trials before the disk filled"
    for t in complete:  # each value is the one its parameters give
        assert t.value == objective_for()(FixedTrial(t.params))
    assert [t.state for t in stock].count(TrialState.RUNNING) <= 1  # at most the one in flight

    # Space is back: the same worker resumes (the trial in flight, if any, is retried).
    if any(t.state == TrialState.RUNNING for t in stock):
        time.sleep(3.5)  # past its heartbeat's grace period (2 s)
    resumed = _worker(url, len(complete) + 5)
    assert resumed.returncode == 0, resumed.stderr
    after = optuna.load_study(study_name="s", storage=url).trials
    for before in stock:  # nothing finished before was changed
        if before.state.is_finished():
            assert _snapshot([after[before.number]]) == _snapshot([before])
        else:  # the trial in flight when the disk filled: failed by heartbeat, then retried
            assert after[before.number].state == TrialState.FAIL
            (retry,) = [t for t in after if t.system_attrs.get("failed_trial") == before.number]
            assert retry.state == TrialState.COMPLETE
            if before.params:  # its parameters reached the disk before it filled: kept
                assert retry.params == before.params
            # else the disk filled between creating the trial and writing its parameters, so
            # the retry is a fresh ask (nothing finished was lost)
    assert TrialState.RUNNING not in [t.state for t in after]
    assert sum(t.state == TrialState.COMPLETE for t in after) >= len(complete) + 4
