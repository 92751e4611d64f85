"""Shared fixtures: storages (SQLite file, JournalStorage file, PostgreSQL server)."""

from __future__ import annotations

import os
import uuid

import pytest

POSTGRES_URL = os.environ.get(
    "EVOLVER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_reachable(url: str) -> str | None:
    """Return None when a connection works, else the reason it does not."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means unreachable
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL test server; under CI=true an unreachable server fails the test."""
    reason = _postgres_reachable(POSTGRES_URL)
    if reason is not None:
        message = f"PostgreSQL at {POSTGRES_URL} is unreachable ({reason})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI requires it", pytrace=False)
        pytest.skip(message)
    return POSTGRES_URL


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.fixture
def journal_path(tmp_path) -> str:
    return str(tmp_path / "journal.log")


@pytest.fixture
def unique_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> dict:
    """Prepared synthetic data, a tiny base BERT and three experts (tests/study/tiny_world.py)."""
    from tests.study.tiny_world import build_tiny_world

    return build_tiny_world(tmp_path_factory.mktemp("world"))


@pytest.fixture
def study_env(tiny_world, tmp_path, monkeypatch) -> dict:
    """Caches pointed at the tiny world, and a SQLite storage URL for this test."""
    monkeypatch.setenv("EVOLVER_OPT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "data").symlink_to(tiny_world["data_dir"], target_is_directory=True)
    return {"world": tiny_world, "tmp": tmp_path, "storage": f"sqlite:///{tmp_path / 'runs.db'}"}
