"""open_storage: the one place storages are made."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy
from optuna.storages import InMemoryStorage, RDBStorage
from optuna.storages.journal import JournalStorage

from evolver_opt import EvolverSampler, StorageError, open_storage
from evolver_opt.runtime.storage import redact

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _objective(trial: optuna.Trial) -> float:
    return sum(trial.suggest_float(f"w{j}", 0, 1) ** 2 for j in range(3))


def test_sqlite_is_wal_with_heartbeat_and_retry(sqlite_url):
    storage = open_storage(sqlite_url)
    assert isinstance(storage, RDBStorage)
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert storage.get_heartbeat_interval() == 10
    assert storage.get_heartbeat_stale_trial_callback() is not None


def test_journal_and_memory_urls(tmp_path):
    assert isinstance(open_storage(f"journal:{tmp_path / 'a' / 'j.log'}"), JournalStorage)
    assert isinstance(open_storage(str(tmp_path / "j.log")), JournalStorage)
    assert isinstance(open_storage("memory"), InMemoryStorage)


def test_default_is_a_sqlite_file_under_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("EVOLVER_OPT_RUNS", str(tmp_path / "runs"))
    storage = open_storage()
    assert isinstance(storage, RDBStorage)
    assert (tmp_path / "runs" / "evolver.db").exists()


def test_stock_optuna_reads_what_we_wrote(sqlite_url):
    study = optuna.create_study(
        study_name="s",
        storage=open_storage(sqlite_url),
        sampler=EvolverSampler(seed=0, population_size=3),
    )
    study.optimize(_objective, n_trials=8)
    stock = optuna.load_study(study_name="s", storage=sqlite_url)
    assert [t.params for t in stock.trials] == [t.params for t in study.trials]
    assert stock.best_value == study.best_value


def test_not_a_url_is_explained():
    with pytest.raises(StorageError, match="not a URL; expected e.g. 'sqlite:///"):
        open_storage("runs/study.db")


def test_unreachable_database_names_url_without_password():
    with pytest.raises(StorageError) as info:
        open_storage("postgresql://alice:s3cret@127.0.0.1:1/nowhere")
    message = str(info.value)
    assert "alice:***@127.0.0.1:1/nowhere" in message and "s3cret" not in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://u:p@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        ("postgresql://u:sl/ash-S1@host/db", "postgresql://u:***@host/db"),
        ("postgresql://u@host/db?password=S2", "postgresql://u@host/db?password=***"),
        ("postgresql://:S3@host/db", "postgresql://:***@host/db"),
        ("postgresql://u:p@S4@host/db", "postgresql://u:***@host/db"),
        ("postgresql://h/db?sslmode=require&sslpassword=S5", "postgresql://h/db?sslmode=require&sslpassword=***"),
        ("sqlite:///x.db", "sqlite:///x.db"),
        ("sqlite:///runs/a@b.db", "sqlite:///runs/a@b.db"),
    ],
)  # fmt: skip
def test_redact_hides_every_password(url, shown):
    assert redact(url) == shown


def test_password_with_at_sign_is_refused_before_connecting():
    with pytest.raises(StorageError, match="percent-encode it as %40") as info:
        open_storage("postgresql://u:p@S4@127.0.0.1:1/db")
    assert "S4" not in str(info.value)


@pytest.mark.postgres
def test_postgresql_study_with_evolver(postgres_url, unique_name):
    storage = open_storage(postgres_url)
    study = optuna.create_study(
        study_name=unique_name, storage=storage, sampler=EvolverSampler(seed=0, population_size=3)
    )
    try:
        study.optimize(_objective, n_trials=10, n_jobs=2)
        assert len(study.trials) == 10
        assert len({t.number for t in study.trials}) == 10
        again = optuna.load_study(study_name=unique_name, storage=open_storage(postgres_url))
        assert again.best_value == study.best_value
    finally:
        optuna.delete_study(study_name=unique_name, storage=storage)


@pytest.mark.postgres
def test_postgresql_url_without_driver_uses_psycopg(postgres_url):
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    storage = open_storage(plain)
    assert isinstance(storage, RDBStorage)
    assert storage.engine.dialect.driver == "psycopg"
    with storage.engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
