"""The demo command runs a small compare into one storage and resumes instead of repeating."""

from __future__ import annotations

import optuna
from click.testing import CliRunner

from evolver_opt.cli import main


def test_demo_runs_three_samplers_and_resumes(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    runner = CliRunner()
    first = runner.invoke(main, ["demo", "--budget", "12", "--groups", "2", "--storage", url])
    assert first.exit_code == 0, first.output
    for name in ("evolver", "cmaes", "random"):
        assert f"\n{name} " in first.output
    summaries = optuna.get_all_study_summaries(storage=url)
    assert sorted(s.study_name.split("-")[3] for s in summaries) == ["cmaes", "evolver", "random"]
    assert all(s.n_trials == 12 for s in summaries)
    second = runner.invoke(main, ["demo", "--budget", "12", "--groups", "2", "--storage", url])
    assert second.exit_code == 0 and "trials ..." not in second.output
    assert all(s.n_trials == 12 for s in optuna.get_all_study_summaries(storage=url))


def test_cli_lists_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "demo" in result.output
