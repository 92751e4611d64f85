"""Shared fixtures: storages (SQLite file, JournalStorage file, PostgreSQL server)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).parents[1]
_WRITTEN_BY_COMMANDS = ("runs", "merged")  # what the CLI writes by default


def pytest_sessionstart(session) -> None:
    session.config._present_before = {n for n in _WRITTEN_BY_COMMANDS if (CHECKOUT / n).exists()}


def pytest_sessionfinish(session, exitstatus) -> None:
    """The suite writes only into temp folders: a default output folder that appeared in the
    checkout during the run fails the session."""
    before = getattr(session.config, "_present_before", set())
    new = [n for n in _WRITTEN_BY_COMMANDS if (CHECKOUT / n).exists() and n not in before]
    if new:
        print(f"\nthe test suite wrote into the checkout: {', '.join(new)}")
        session.exitstatus = 1


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


@pytest.fixture(autouse=True, scope="session")
def _runs_outside_the_checkout(tmp_path_factory):
    """Default storages, reports and artifacts go to a temp folder, never into the checkout
    (``EVOLVER_OPT_RUNS``; ``EVOLVER_OPT_STORAGE`` unset so the default is under it)."""
    runs = tmp_path_factory.mktemp("runs")
    saved = {k: os.environ.get(k) for k in ("EVOLVER_OPT_RUNS", "EVOLVER_OPT_STORAGE")}
    os.environ["EVOLVER_OPT_RUNS"] = str(runs)
    os.environ.pop("EVOLVER_OPT_STORAGE", None)
    yield runs
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _float32_unless_asked(monkeypatch):
    """``precision = "auto"`` resolves to float32 in tests (their expected values are float32
    ones); tests of bfloat16 and of ``auto`` itself delete ``EVOLVER_OPT_PRECISION``."""
    monkeypatch.setenv("EVOLVER_OPT_PRECISION", "fp32")


@pytest.fixture(autouse=True)
def _idle_load_average(monkeypatch):
    """The commands' load-average warning (``--threads``) sees an idle machine, so output does
    not depend on what else runs; tests of the warning patch ``load_average`` themselves."""
    from evolver_opt.cli import _options

    monkeypatch.setattr(_options, "load_average", lambda: 0.0)


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
    """Prepared synthetic data, a tiny base BERT and three experts (tests/tiny_world.py)."""
    from tests.tiny_world import build_tiny_world

    return build_tiny_world(tmp_path_factory.mktemp("world"))


@pytest.fixture
def study_env(tiny_world, tmp_path, monkeypatch) -> dict:
    """Caches pointed at the tiny world, and a SQLite storage URL for this test."""
    monkeypatch.setenv("EVOLVER_OPT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "data").symlink_to(tiny_world["data_dir"], target_is_directory=True)
    return {"world": tiny_world, "tmp": tmp_path, "storage": f"sqlite:///{tmp_path / 'runs.db'}"}


@pytest.fixture
def world(study_env, tmp_path) -> dict:
    """The tiny world with its own copies of the experts (statistics are written next to them)."""
    copy = dict(study_env["world"])
    copy["experts"] = {
        d: Path(shutil.copytree(p, tmp_path / "experts" / d)) for d, p in copy["experts"].items()
    }
    return copy
