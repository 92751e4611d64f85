"""Workers killed for real: SIGKILL mid-trial, SIGTERM, and a crash between tell and ask.

The killed worker is a real ``evolver-opt run`` process; the run that resumes after it is the
same command in this process (CliRunner), which saves a torch import per test.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from evolver_opt.cli import main
from tests.reliability.conftest import (
    run_args,
    start_cli,
    stop_mid_trial,
    synthetic_worker,
    trials_of,
)
from tests.tiny_world import write_study

# The killed run's budget is one it cannot reach before the test stops it, however fast the
# machine; the run after it gets the trials found plus two. Trials 0-3 are the start points, and
# the trial stopped mid-way (after the fifth) is an offspring.
UNREACHED = 1000


@pytest.fixture
def slow_study(study_env, tmp_path) -> Path:
    """Three dev domains: a trial lasts long enough (> the 0.1 s after which buffered
    parameters are written) to be caught RUNNING with its parameters stored."""
    return write_study(tmp_path / "s.toml", study_env["world"], granularity='"model"')


def _rerun(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output


def _params(trials, states=(TrialState.COMPLETE,)):
    return [tuple(sorted(t.params.items())) for t in trials if t.state in states]


def test_cli_sigkill_mid_trial_then_rerun_retries_the_stale_trial(slow_study, study_env, tmp_path):
    """Fault 1: `evolver-opt run` killed with SIGKILL in a trial; the next run fails the stale
    trial by heartbeat, retries it with the same parameters and lineage, and loses nothing."""
    url, name = study_env["storage"], "killed"
    proc = start_cli(*run_args(slow_study, url, name, UNREACHED, "--heartbeat", "1"))
    stale = stop_mid_trial(proc, url, name)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {t.number: t for t in trials_of(url, name)}
    assert before[stale].state == TrialState.RUNNING
    budget = len(before) + 2
    time.sleep(3.5)  # past the grace period (2 x heartbeat; SQLite stores whole seconds)
    _rerun(run_args(slow_study, url, name, budget, "--heartbeat", "1"))
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
    assert len(after) == budget + 1  # the budget, plus the failed trial its retry replaces


def test_cli_sigterm_fails_and_requeues_the_trial_in_flight(slow_study, study_env, tmp_path):
    """SIGTERM mid-trial: the worker exits 143 and leaves nothing RUNNING. The trial in flight
    is failed and re-queued with its parameters; if the signal arrived while the trial was
    writing to the database, the write finishes first (a commit cut in half can leave SQLite's
    write lock held), so a trial that was storing its result may complete instead."""
    url, name = study_env["storage"], "terminated"
    args = run_args(slow_study, url, name, UNREACHED, "--heartbeat", "1")
    proc = start_cli(*args, log=tmp_path / "first.log")
    current = stop_mid_trial(proc, url, name)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    assert proc.wait(timeout=120) == 143, (tmp_path / "first.log").read_text()
    trials = trials_of(url, name)
    log = (tmp_path / "first.log").read_text()
    assert TrialState.RUNNING not in [t.state for t in trials], log
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == current]
    if trials[current].state == TrialState.COMPLETE:  # it was storing its scores
        assert trials[current].user_attrs and not retries and trials[-1].number == current
    else:
        assert trials[current].state == TrialState.FAIL
        assert "SIGTERM" in trials[current].system_attrs["fail_reason"]
        (retry,) = retries
        assert retry.state == TrialState.WAITING and retry.params == trials[current].params
        assert "re-queued" in log
    budget = len(trials) + 1  # the retry (counted in place of the failed trial), new trials
    _rerun(run_args(slow_study, url, name, budget, "--heartbeat", "1"))  # no grace to wait for
    after = trials_of(url, name)
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in after[current + 1 :])
    assert len(after) == budget + (trials[current].state == TrialState.FAIL)


@pytest.mark.parametrize(
    "options", [{}, {"mutation": "pbest", "adapt": "jde"}], ids=["evolver", "evolver-plus"]
)
def test_crash_between_tell_and_ask_resumes_like_an_uninterrupted_run(tmp_path, options):
    """Fault 6: the worker dies right after a trial's state is written; the resumed study makes
    the same trials as one that never stopped (single worker, seeded); evolver-plus too (its
    rates and archive come back from the stored trials)."""
    env = {"EVOLVER_TEST_SAMPLER_OPTIONS": json.dumps(options)}

    def worker(url: str, *args: str) -> int:
        return synthetic_worker(url, "s", 16, *args, **env).wait(timeout=300)

    straight, crashed = (f"sqlite:///{tmp_path / n}.db" for n in ("straight", "crashed"))
    assert worker(straight, "run") == 0
    assert worker(crashed, "crash-after", "9") == 3
    assert len(trials_of(crashed, "s")) == 10  # trial 9 was told, trial 10 never asked
    assert worker(crashed, "run") == 0
    a, b = trials_of(straight, "s"), trials_of(crashed, "s")
    assert [t.state for t in b] == [TrialState.COMPLETE] * 16
    assert _params(a) == _params(b)


def test_sigkill_then_an_immediate_rerun_fails_the_dead_workers_trial_at_once(
    slow_study, study_env, tmp_path
):
    """Issue 27, item 4: rerun right after SIGKILL, well inside the heartbeat's grace period
    (default heartbeat 10 s): the killed trial was counted as done and stayed RUNNING for good.
    On the same machine its worker's process is known to be gone, so it is failed and retried
    at once, before the budget is counted."""
    url, name = study_env["storage"], "killed-now"
    proc = start_cli(*run_args(slow_study, url, name, UNREACHED))
    stale = stop_mid_trial(proc, url, name)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {t.number: t for t in trials_of(url, name)}
    assert before[stale].state == TrialState.RUNNING
    budget = len(before)  # the killed trial would complete the budget if it counted
    result = CliRunner().invoke(main, run_args(slow_study, url, name, budget))
    assert result.exit_code == 0, result.output
    assert "ran 0 trials" not in result.output
    after = trials_of(url, name)
    assert after[stale].state == TrialState.FAIL
    assert "is gone" in after[stale].system_attrs["fail_reason"]
    (retry,) = [t for t in after if t.system_attrs.get("failed_trial") == stale]
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry.params == before[stale].params
    assert TrialState.RUNNING not in [t.state for t in after]
    for number, t in before.items():  # no finished trial lost or changed
        if t.state.is_finished():
            assert after[number].state == t.state and after[number].values == t.values
