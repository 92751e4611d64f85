"""Helpers of the fault suite: `evolver-opt run` in real processes, throwaway PostgreSQL
databases, and reading a study back."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import FrozenTrial

from evolver_opt import open_storage
from tests.tiny_world import write_study

optuna.logging.set_verbosity(optuna.logging.WARNING)
CLI = str(Path(sys.executable).with_name("evolver-opt"))
ROOT = Path(__file__).parents[2]


def child_env() -> dict[str, str]:
    """Environment of a worker process: this checkout importable, one compute thread (several
    workers share 2 cores; torch's default thread pool per process only oversubscribes them)."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def start_cli(*args: str, log: Path | None = None) -> subprocess.Popen:
    """``evolver-opt ARGS`` in its own process (stdout and stderr to ``log``)."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed by the process
    return subprocess.Popen([CLI, *args], stdout=out, stderr=subprocess.STDOUT, env=child_env())


def run_args(study_file: Path, storage: str, name: str, n_trials: int, *extra: str) -> list[str]:
    """Arguments of ``evolver-opt run`` on one study (for :func:`start_cli` or CliRunner)."""
    return [
        "run", str(study_file), "--storage", storage, "--study-name", name,
        "--n-trials", str(n_trials), "--no-progress", *extra,
    ]  # fmt: skip


WORKER = Path(__file__).with_name("_synthetic_worker.py")


def synthetic_worker(
    url: str, name: str, n_trials: int, *mode: str, log: Path | None = None, **env: str
) -> subprocess.Popen:
    """``_synthetic_worker.py URL NAME N_TRIALS MODE...`` in its own process (no torch import);
    ``env``: extra environment variables (e.g. ``EVOLVER_TEST_RETRY_S``)."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed by the process
    cmd = [sys.executable, str(WORKER), url, name, str(n_trials), *mode]
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**child_env(), **env})


@functools.lru_cache(maxsize=16)
def _reader(url: str):
    return open_storage(url, heartbeat_interval=None)


def trials_of(url: str, name: str) -> list[FrozenTrial]:
    storage = _reader(url)
    try:
        return storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False)
    except KeyError:
        return []


@functools.lru_cache(maxsize=16)
def _plain_engine(url: str) -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(url)


def _unscored_running(url: str, name: str) -> tuple[int, list[int]]:
    """How many trials the study has, and the numbers of its RUNNING trials with parameters
    and no user attribute yet (the objective records its scores as user attributes just before
    it returns), read with a plain SELECT: in WAL mode it never waits for, nor holds up, the
    worker's writes (the storage's sessions begin with BEGIN IMMEDIATE, so polling through it
    would keep the worker waiting for the write lock, and the worker would mostly be stopped
    there rather than evaluating); nor does it block when the worker is stopped (SIGSTOP)
    inside a write transaction."""
    with _plain_engine(url).connect() as conn:
        if not sqlalchemy.inspect(conn).has_table("trials"):
            return 0, []  # the worker has not made the schema yet
        rows = conn.execute(
            sqlalchemy.text(
                "SELECT t.number, t.state, "
                "EXISTS (SELECT 1 FROM trial_params p WHERE p.trial_id = t.trial_id), "
                "EXISTS (SELECT 1 FROM trial_user_attributes a WHERE a.trial_id = t.trial_id) "
                "FROM trials t JOIN studies s ON t.study_id = s.study_id "
                "WHERE s.study_name = :name"
            ),
            {"name": name},
        ).all()
    running = [n for n, state, params, attrs in rows if state == "RUNNING" and params and not attrs]
    return len(rows), running


def stop_mid_trial(proc: subprocess.Popen, url: str, name: str, timeout: float = 240) -> int:
    """Freeze ``proc`` (SIGSTOP) inside the objective of one of its trials: the trial is RUNNING,
    its parameters are stored and its scores are not; returns that trial's number. The caller
    then kills or resumes it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the worker ended before it could be stopped mid-trial"
        n_trials, running = _unscored_running(url, name)
        if running and n_trials > 5:
            proc.send_signal(signal.SIGSTOP)
            if running[0] in _unscored_running(url, name)[1]:
                return running[0]
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("no trial was seen running")


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path, monkeypatch) -> None:
    """Default study databases and artifact folders (``runs/``) go to the test's folder, for
    this process and the workers it starts."""
    monkeypatch.setenv("EVOLVER_OPT_RUNS", str(tmp_path / "runs"))


@pytest.fixture
def tiny_study(study_env, tmp_path) -> Path:
    """A model-granularity study file over the tiny world, one dev domain (fast trials)."""
    return write_study(
        tmp_path / "s.toml", study_env["world"], granularity='"model"', dev='["vader-tweets"]'
    )


@pytest.fixture
def fresh_pg(postgres_url):
    """A new, empty PostgreSQL database (schema not created), dropped afterwards."""
    name = f"evolver_{uuid.uuid4().hex[:10]}"
    admin_url = postgres_url.rsplit("/", 1)[0] + "/postgres"
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_url.rsplit("/", 1)[0] + "/" + name
    finally:
        _reader.cache_clear()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
