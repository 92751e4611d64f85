"""BatchedRDBStorage: the same trials as stock Optuna, fewer transactions, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from evolver_opt import flush_params, open_storage
from evolver_opt.runtime.storage import BatchedRDBStorage

optuna.logging.set_verbosity(optuna.logging.WARNING)
WORKER = Path(__file__).with_name("_batched_worker.py")
ROOT = Path(__file__).parents[2]

# A stock Optuna process: load the study from the plain URL and dump every trial as JSON.
DUMP = """
import json, sys, optuna
study = optuna.load_study(study_name=sys.argv[2], storage=sys.argv[1])
print(json.dumps([
    {"number": t.number, "state": t.state.name, "values": t.values,
     "params": list(t.params.items()),
     "distributions": [[k, optuna.distributions.distribution_to_json(d)]
                       for k, d in t.distributions.items()],
     "user_attrs": t.user_attrs, "system_attrs": t.system_attrs,
     "intermediate_values": sorted(t.intermediate_values.items())}
    for t in study.trials]))
"""


def stock_dump(url: str, name: str) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-c", DUMP, url, name], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def objective(trial: optuna.Trial) -> float:
    """Every kind of parameter and write; some trials prune, one fails."""
    x = [trial.suggest_float(f"x{j}", -1.0, 1.0) for j in range(20)]
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    n = trial.suggest_int("n", 1, 9, step=2)
    kind = trial.suggest_categorical("kind", ["a", "b", None])
    trial.set_user_attr("note", {"n": n, "kind": kind})
    value = sum(v * v for v in x) + lr + n
    trial.report(value, step=0)
    if trial.number == 3:
        raise RuntimeError("a failing objective")
    if trial.number % 4 == 1:
        raise optuna.TrialPruned()
    q = trial.suggest_float("late", 0.0, 1.0, step=0.25)  # a parameter after other writes
    return value + q


def run(storage: optuna.storages.BaseStorage | str, name: str) -> optuna.Study:
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(seed=7)
    )
    study.enqueue_trial({"x0": 0.5, "n": 3})
    study.optimize(objective, n_trials=10, catch=(RuntimeError,))
    study.set_user_attr("done", True)
    return study


def test_batched_path_writes_the_same_trials_as_stock(tmp_path):
    stock_url = f"sqlite:///{tmp_path / 'stock.db'}"
    ours_url = f"sqlite:///{tmp_path / 'ours.db'}"
    run(stock_url, "s")
    ours = open_storage(ours_url, heartbeat_interval=None)
    assert isinstance(ours, BatchedRDBStorage)
    run(ours, "s")
    expected = stock_dump(stock_url, "s")
    assert [t["state"] for t in expected].count("FAIL") == 1
    assert [t["state"] for t in expected].count("PRUNED") == 3
    assert stock_dump(ours_url, "s") == expected


def test_our_reader_builds_the_frozen_trials_stock_builds(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    run(open_storage(url, heartbeat_interval=None), "s")
    stock = optuna.load_study(study_name="s", storage=url).trials
    ours = optuna.load_study(study_name="s", storage=open_storage(url)).trials
    assert ours == stock  # FrozenTrial equality: every field, datetimes included
    assert [list(t.params) for t in ours] == [list(t.params) for t in stock]


def test_buffered_params_are_read_back_here_and_written_on_flush(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    storage = open_storage(url, heartbeat_interval=None, flush_after=None)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    values = [trial.suggest_float(f"w{j}", 0.0, 1.0) for j in range(5)]
    outside = optuna.storages.RDBStorage(url)
    assert outside.get_trial(trial._trial_id).params == {}  # not yet in the database
    assert list(study.trials[0].params.values()) == values  # but this process sees them
    assert storage.get_trial_param(trial._trial_id, "w3") == values[3]
    flush_params(trial)
    assert list(outside.get_trial(trial._trial_id).params.values()) == values
    flush_params(trial)  # nothing left: a no-op
    study.tell(trial, 1.0)
    assert len(outside.get_trial(trial._trial_id).params) == 5


def test_a_heartbeat_writes_the_buffered_params_first(tmp_path):
    """A heartbeat says "this trial is alive": its parameters must already be in the database,
    so a worker that dies right after leaves a trial another one can retry."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    storage = open_storage(url, heartbeat_interval=60, flush_after=None)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    values = [trial.suggest_float(f"w{j}", 0.0, 1.0) for j in range(3)]
    outside = optuna.storages.RDBStorage(url)
    assert outside.get_trial(trial._trial_id).params == {}
    storage.record_heartbeat(trial._trial_id)
    assert list(outside.get_trial(trial._trial_id).params.values()) == values


def test_idle_timer_writes_params_without_an_explicit_flush(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    study = optuna.create_study(
        study_name="s", storage=open_storage(url, heartbeat_interval=None, flush_after=0.05)
    )
    trial = study.ask()
    trial.suggest_float("w", 0.0, 1.0)
    outside = optuna.storages.RDBStorage(url)
    deadline = time.time() + 30
    while not outside.get_trial(trial._trial_id).params and time.time() < deadline:
        time.sleep(0.02)
    assert "w" in outside.get_trial(trial._trial_id).params


def test_incompatible_distribution_raises_at_the_suggest(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    study.optimize(lambda t: t.suggest_float("w", 0.0, 1.0), n_trials=1)
    resumed = optuna.load_study(study_name="s", storage=open_storage(url, heartbeat_interval=None))
    trial = resumed.ask()
    with pytest.raises(ValueError, match="Cannot set different distribution kind"):
        trial.suggest_int("w", 0, 3)


def test_a_trial_finished_elsewhere_refuses_new_params(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat_interval=None))
    trial = study.ask()
    optuna.storages.RDBStorage(url).set_trial_state_values(trial._trial_id, TrialState.FAIL)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        trial.suggest_float("w", 0.0, 1.0)


def test_reads_of_trials_run_here_equal_full_reads(tmp_path):
    """Trials this process runs are read from what it wrote (one state query while running,
    no parameter rows): every read equals a stock read of the same trial."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    storage = open_storage(url, heartbeat_interval=None, flush_after=None)
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({"w0": 0.25})
    outside = optuna.storages.RDBStorage(url)
    for n in range(3):  # an enqueued (claimed) trial, then fresh ones
        trial = study.ask()
        for j in range(4):
            trial.suggest_float(f"w{j}", 0.0, 1.0)
        trial.suggest_int("k", 0, 3)
        trial.set_user_attr("u", (1, [2, "x"]))
        study._storage.set_trial_system_attr(trial._trial_id, "s", {"a": n})
        trial.report(0.5, step=2)
        flush_params(trial)
        assert storage.get_trial(trial._trial_id) == outside.get_trial(trial._trial_id)
        mine = storage.get_trial(trial._trial_id)
        mine.params.clear()
        mine.user_attrs["u"].append(0)  # a copy: changing it changes nothing stored
        assert storage.get_trial(trial._trial_id) == outside.get_trial(trial._trial_id)
        study.tell(trial, float(n))
        assert storage.get_trial(trial._trial_id) == outside.get_trial(trial._trial_id)
        assert list(storage.get_trial(trial._trial_id).params) == ["w0", "w1", "w2", "w3", "k"]
    assert study.trials == outside.get_all_trials(study._study_id)


def test_a_trial_run_here_and_failed_elsewhere_reads_failed(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    storage = open_storage(url, heartbeat_interval=None, flush_after=None)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    trial.suggest_float("w", 0.0, 1.0)
    flush_params(trial)
    optuna.storages.RDBStorage(url).set_trial_state_values(trial._trial_id, TrialState.FAIL)
    read = storage.get_trial(trial._trial_id)
    assert read.state == TrialState.FAIL and read.params == {"w": trial.params["w"]}
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        trial.set_user_attr("u", 1)


@pytest.mark.postgres
def test_postgresql_batched_path_matches_stock(postgres_url, unique_name):
    run(postgres_url, unique_name + "-stock")
    run(open_storage(postgres_url, heartbeat_interval=None), unique_name + "-ours")
    try:
        expected = stock_dump(postgres_url, unique_name + "-stock")
        assert stock_dump(postgres_url, unique_name + "-ours") == expected
    finally:
        for suffix in ("-stock", "-ours"):
            optuna.delete_study(study_name=unique_name + suffix, storage=postgres_url)


def test_sigkill_after_flush_leaves_a_retryable_trial(tmp_path):
    """kill -9 during the evaluation: the params are in the database; the retry reuses them."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    optuna.create_study(study_name="s", storage=url)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), url, "s"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("evaluating"), line
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed = optuna.load_study(study_name="s", storage=url).trials[0]
    assert killed.state == TrialState.RUNNING
    assert len(killed.params) == 50

    time.sleep(4.0)  # past the 2 s grace period (SQLite timestamps have 1 s resolution)
    storage = open_storage(url, heartbeat_interval=1, grace_period=2)
    study = optuna.load_study(study_name="s", storage=storage)
    study.optimize(lambda t: sum(t.suggest_float(f"w{j}", 0.0, 1.0) for j in range(50)), 1)
    failed, retry = optuna.load_study(study_name="s", storage=url).trials
    assert failed.state == TrialState.FAIL
    assert retry.state == TrialState.COMPLETE and retry.system_attrs["failed_trial"] == 0
    assert retry.params == killed.params


def test_running_trial_without_any_heartbeat_is_failed_after_the_grace_period(tmp_path):
    """A worker that died between creating its trial and its first heartbeat (e.g. a full disk)
    leaves a RUNNING trial with no heartbeat row; Optuna alone never fails it."""
    url = f"sqlite:///{tmp_path / 'hb.db'}"
    ours = open_storage(url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="s", storage=ours)
    other = open_storage(url, heartbeat_interval=1, grace_period=1)  # "the dead worker"
    orphan = optuna.load_study(study_name="s", storage=other).ask({"x": _X})
    flush_params(orphan)
    mine = study.ask({"x": _X})  # this process's own trial, also without a heartbeat yet
    optuna.storages.fail_stale_trials(study)
    assert study.trials[orphan.number].state == TrialState.RUNNING  # within the grace period
    time.sleep(1.5)
    optuna.storages.fail_stale_trials(study)
    trials = study.trials
    assert trials[orphan.number].state == TrialState.FAIL
    assert trials[mine.number].state == TrialState.RUNNING  # ours is alive: left alone
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert retry.state == TrialState.WAITING and retry.params == trials[orphan.number].params


_X = optuna.distributions.FloatDistribution(0.0, 1.0)
