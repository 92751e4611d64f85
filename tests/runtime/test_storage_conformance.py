"""Optuna's own storage conformance suite (``optuna.testing.pytest_storages``) run on what
``open_storage`` returns: the batched RDB storage on SQLite and on PostgreSQL (a fresh database
per module, its tables emptied before each test: the suite expects an empty storage). The
stock ``RDBStorage`` that ``batch_params=False`` gives is Optuna's own, tested by Optuna (it
passed here too: 59 tests)."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy
from optuna.testing.pytest_storages import StorageTestCase

from evolver_opt import open_storage

# Optuna's tables, emptied between tests (its schema version rows stay): much faster than a
# new database and schema per test.
_DATA_TABLES = (
    "trial_heartbeats", "trial_intermediate_values", "trial_values", "trial_params",
    "trial_system_attributes", "trial_user_attributes", "trials", "study_system_attributes",
    "study_user_attributes", "study_directions", "studies",
)  # fmt: skip


@pytest.fixture(scope="module")
def postgresql_database(postgres_url):
    """A new PostgreSQL database on the test server for this module, dropped afterwards."""
    name = f"conformance_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    yield sqlalchemy.make_url(postgres_url).set(database=name).render_as_string(False)
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module")
def sqlite_database(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('conformance') / 'conformance.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request):
    """An empty storage from ``open_storage`` (the suite expects no study at the start)."""
    url = request.getfixturevalue(f"{request.param}_database")
    opened = open_storage(url, heartbeat_interval=None)
    with opened.engine.begin() as conn:
        if request.param == "postgresql":
            tables = ", ".join(_DATA_TABLES)
            conn.execute(sqlalchemy.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        else:
            for table in _DATA_TABLES:
                conn.execute(sqlalchemy.text(f"DELETE FROM {table}"))
    yield opened
    # Write what the test left buffered now: the flush timer would otherwise write it during
    # the next test's TRUNCATE (a deadlock on PostgreSQL).
    getattr(opened, "_backend", opened).flush()
    opened.engine.dispose()  # release the database before it is dropped


class TestOpenStorage(StorageTestCase):
    """Every test of Optuna's suite, on each storage above."""
