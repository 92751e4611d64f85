"""One default storage for every command, and messages that name it (issue 19, items 1, 4, 6)."""

from __future__ import annotations

import optuna
from click.testing import CliRunner

from evolver_opt.cli import main
from evolver_opt.search.samplers import SAMPLER_NAMES
from tests.tiny_world import write_study


def test_demo_studies_and_export_share_one_default_storage(tmp_path, monkeypatch):
    monkeypatch.setenv("EVOLVER_OPT_RUNS", str(tmp_path / "runs"))
    runner = CliRunner()
    assert runner.invoke(main, ["demo", "--synthetic", "--budget", "6"]).exit_code == 0
    listed = runner.invoke(main, ["studies"])
    assert listed.exit_code == 0
    assert f"studies in sqlite:///{tmp_path / 'runs' / 'evolver.db'}" in listed.output
    assert "demo-synthetic-g10-evolver-plus-seed0" in listed.output
    missing = runner.invoke(main, ["export", "--study-name", "nope", "--out", str(tmp_path / "m")])
    assert missing.exit_code == 1
    assert f"no study named 'nope' in storage sqlite:///{tmp_path / 'runs' / 'evolver.db'}" in (
        missing.output
    )
    assert "demo-synthetic-g10-cmaes-seed0" in missing.output  # it lists what the storage holds
    synthetic = runner.invoke(
        main, ["export", "--study-name", "demo-synthetic-g10-evolver-plus-seed0", "--out", "m"]
    )
    assert synthetic.exit_code == 1 and "is a synthetic problem" in synthetic.output


def test_evolver_opt_storage_changes_the_default_of_every_command(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("EVOLVER_OPT_STORAGE", url)
    runner = CliRunner()
    assert runner.invoke(main, ["demo", "--synthetic", "--budget", "6"]).exit_code == 0
    assert len(optuna.get_all_study_summaries(url)) == 3
    assert f"studies in {url}" in runner.invoke(main, ["studies"]).output


def test_studies_counts_finished_trials_and_creates_no_database(tmp_path):
    absent = tmp_path / "absent.db"
    result = CliRunner().invoke(main, ["studies", "--storage", f"sqlite:///{absent}"])
    assert result.exit_code == 0 and "no study database" in result.output
    assert not absent.exists()
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    for _ in range(2):
        study.enqueue_trial({"x": 0.5})  # WAITING: not finished trials
    row = [
        line
        for line in CliRunner().invoke(main, ["studies", "--storage", url]).output.splitlines()
        if line.startswith("s ")
    ]
    assert row and row[0].split()[2] == "3"


def test_a_budget_within_the_start_points_is_warned_about(study_env, tmp_path):
    study = write_study(tmp_path / "s.toml", study_env["world"])  # 3 experts + the average
    result = CliRunner().invoke(
        main,
        ["run", str(study), "--n-trials", "3", "--storage", study_env["storage"], "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    assert "3 trials and 4 start points" in result.output and "--n-trials > 4" in result.output


def test_the_help_lists_every_registered_sampler():
    for command in ("run", "compare"):
        text = " ".join(CliRunner().invoke(main, [command, "--help"]).output.split())
        for name in SAMPLER_NAMES:
            assert name in text.replace("- ", "-"), (command, name)
