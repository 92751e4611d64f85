"""The database: unreachable (13), schema of another Optuna version (14), another config on
resume (15), and no password in any message or log."""

from __future__ import annotations

import pytest
import sqlalchemy
from click.testing import CliRunner

from evolver_opt import StorageError, open_storage
from evolver_opt.cli import main
from tests.reliability.conftest import run_args, trials_of
from tests.tiny_world import write_study


def test_cli_unreachable_database_names_the_url_without_its_password(tiny_study):
    url = "postgresql://alice:s3cret-pw@127.0.0.1:1/merges"
    result = CliRunner().invoke(main, run_args(tiny_study, url, "x", 4))
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.output
    out = result.output
    assert "cannot open storage postgresql+psycopg://alice:***@127.0.0.1:1/merges" in out
    assert "s3cret-pw" not in out and "Traceback" not in out


def test_schema_of_another_optuna_version_is_refused_not_upgraded(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    open_storage(url, heartbeat_interval=None).engine.dispose()
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'v1.3.0.a'")
    engine.dispose()
    with pytest.raises(StorageError, match=r"cannot use storage sqlite:///.*old.db: .*schema"):
        open_storage(url)
    with sqlalchemy.create_engine(url).connect() as conn:  # left as it was
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == (
            "v1.3.0.a"
        )


def test_cli_resume_with_another_config_is_refused_naming_the_difference(
    tiny_study, study_env, tmp_path
):
    url = study_env["storage"]
    args = run_args(tiny_study, url, "s", 5)
    assert CliRunner().invoke(main, args).exit_code == 0
    changed = write_study(tmp_path / "b.toml", study_env["world"], granularity='"model"',
                          dev='["vader-tweets"]', bounds="[0.0, 2.0]")  # fmt: skip
    result = CliRunner().invoke(main, run_args(changed, url, "s", 8))
    assert result.exit_code == 1
    assert "refusing to resume" in result.output
    assert "bounds: stored [0.0, 1.0], now [0.0, 2.0]" in result.output
    assert len(trials_of(url, "s")) == 5  # nothing ran under the new config
