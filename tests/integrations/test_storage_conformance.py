"""Optuna's own storage conformance suite (``optuna.testing.pytest_storages``) run on what
``open_storage`` returns: the batched RDB storage on SQLite and on PostgreSQL (a fresh database
per test: the suite expects an empty storage). The stock ``RDBStorage`` that
``batch_params=False`` gives is Optuna's own, tested by Optuna (it passed here too: 59 tests)."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy
from optuna.testing.pytest_storages import StorageTestCase

from evolver_opt import open_storage


@pytest.fixture
def fresh_postgres(postgres_url):
    """A new, empty PostgreSQL database on the test server, dropped afterwards."""
    name = f"conformance_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = sqlalchemy.make_url(postgres_url).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path):
    if request.param == "postgresql":
        url = request.getfixturevalue("fresh_postgres")
    else:
        url = f"sqlite:///{tmp_path / 'conformance.db'}"
    opened = open_storage(url, heartbeat_interval=None)
    yield opened
    engine = getattr(opened, "engine", None)
    if engine is not None:
        engine.dispose()  # release the database before it is dropped


class TestOpenStorage(StorageTestCase):
    """Every test of Optuna's suite, on each storage above."""
