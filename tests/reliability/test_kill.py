"""Workers killed for real: SIGKILL mid-trial, SIGTERM, and a crash between tell and ask."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from optuna.trial import TrialState

from tests.reliability.conftest import ROOT, run_args, start_cli, stop_mid_trial, trials_of

WORKER = Path(__file__).with_name("_synthetic_worker.py")


def _params(trials, states=(TrialState.COMPLETE,)):
    return [tuple(sorted(t.params.items())) for t in trials if t.state in states]


def test_cli_sigkill_mid_trial_then_rerun_retries_the_stale_trial(tiny_study, study_env, tmp_path):
    """Fault 1: `evolver-opt run` killed with SIGKILL in a trial; the next run fails the stale
    trial by heartbeat, retries it with the same parameters and lineage, and loses nothing."""
    url, name = study_env["storage"], "killed"
    args = run_args(tiny_study, url, name, 10, "--heartbeat", "1")
    proc = start_cli(*args, log=tmp_path / "first.log")
    stale = stop_mid_trial(proc, url, name)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {t.number: t for t in trials_of(url, name)}
    assert before[stale].state == TrialState.RUNNING
    time.sleep(3.5)  # past the grace period (2 x heartbeat; SQLite stores whole seconds)
    again = start_cli(*args, log=tmp_path / "second.log")
    assert again.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()
    after = trials_of(url, name)
    assert [t.state for t in after].count(TrialState.FAIL) == 1
    assert after[stale].state == TrialState.FAIL
    (retry,) = [t for t in after if t.system_attrs.get("failed_trial") == stale]
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry.params == before[stale].params
    assert retry.system_attrs.get("evolver:lineage") == before[stale].system_attrs.get(
        "evolver:lineage"
    )
    assert retry.system_attrs["retry_history"] == [stale]  # retried once (max_retry bounds it)
    for number, t in before.items():  # no finished trial lost or changed
        if t.state.is_finished():
            assert after[number].state == t.state and after[number].values == t.values
    assert len(after) == 11  # the budget of 10, plus the failed trial its retry replaces


def test_cli_sigterm_fails_and_requeues_the_trial_in_flight(tiny_study, study_env, tmp_path):
    url, name = study_env["storage"], "terminated"
    args = run_args(tiny_study, url, name, 10, "--heartbeat", "1")
    proc = start_cli(*args, log=tmp_path / "first.log")
    current = stop_mid_trial(proc, url, name)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    assert proc.wait(timeout=120) == 143, (tmp_path / "first.log").read_text()
    trials = trials_of(url, name)
    assert TrialState.RUNNING not in [t.state for t in trials]
    assert trials[current].state == TrialState.FAIL
    assert "SIGTERM" in trials[current].system_attrs["fail_reason"]
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == current]
    assert retry.state == TrialState.WAITING and retry.params == trials[current].params
    assert "re-queued" in (tmp_path / "first.log").read_text()
    again = start_cli(*args, log=tmp_path / "second.log")  # no grace period to wait for
    assert again.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()
    after = trials_of(url, name)
    assert after[retry.number].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert len(after) == 11


def test_crash_between_tell_and_ask_resumes_like_an_uninterrupted_run(tmp_path):
    """Fault 6: the worker dies right after a trial's state is written; the resumed study makes
    the same trials as one that never stopped (single worker, seeded)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def worker(url: str, *args: str) -> int:
        cmd = [sys.executable, str(WORKER), url, "s", "30", *args]
        return subprocess.run(cmd, check=False, env=env, timeout=300).returncode

    straight, crashed = (f"sqlite:///{tmp_path / n}.db" for n in ("straight", "crashed"))
    assert worker(straight, "run") == 0
    assert worker(crashed, "crash-after", "17") == 3
    assert len(trials_of(crashed, "s")) == 18  # trial 17 was told, trial 18 never asked
    assert worker(crashed, "run") == 0
    a, b = trials_of(straight, "s"), trials_of(crashed, "s")
    assert [t.state for t in b] == [TrialState.COMPLETE] * 30
    assert _params(a) == _params(b)
