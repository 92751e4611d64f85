"""The demo: a small compare into one storage that resumes instead of repeating."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

import optuna
from click.testing import CliRunner

from evolver_opt.cli import main
from tests.tiny_world import write_study


def test_synthetic_demo_runs_three_samplers_and_resumes(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    runner = CliRunner()
    first = runner.invoke(
        main, ["demo", "--synthetic", "--budget", "12", "--groups", "2", "--storage", url]
    )
    assert first.exit_code == 0, first.output
    for name in ("evolver-plus", "cmaes", "random"):
        assert f"\n{name} " in first.output
    summaries = optuna.get_all_study_summaries(storage=url)
    names = sorted(s.study_name.removeprefix("demo-synthetic-g2-") for s in summaries)
    assert names == ["cmaes-seed0", "evolver-plus-seed0", "random-seed0"]
    assert all(s.n_trials == 12 for s in summaries)
    second = runner.invoke(
        main, ["demo", "--synthetic", "--budget", "12", "--groups", "2", "--storage", url]
    )
    assert second.exit_code == 0 and "trials ..." not in second.output
    assert all(s.n_trials == 12 for s in optuna.get_all_study_summaries(storage=url))


def test_real_demo_path_on_a_tiny_world(study_env, tmp_path):
    study_file = write_study(tmp_path / "s.toml", study_env["world"], granularity='"model"')
    out = tmp_path / "demo"
    args = [
        "demo",
        "--study",
        str(study_file),
        "--budget",
        "5",
        "--storage",
        study_env["storage"],
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "| evolver-plus | 1 |" in result.output and "| cmaes | 1 |" in result.output
    assert (out / "report.md").exists() and "optuna-dashboard" in result.output
    # one line says what the table shows: start points, gain over the average, gap closed
    (line,) = [x for x in result.output.splitlines() if x.startswith("What you see:")]
    assert "uniform average (test mean 0." in line and "over the average" in line
    assert "of the gap" in line and "The best static merge" in line
    assert "| static | ties |" in result.output  # no form here: every untuned static row
    assert line in (out / "report.md").read_text()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "already finished (5 trials)" in again.output
    assert "running the rest" not in again.output and "5/5" not in again.output
    estimates = [x for x in again.output.splitlines() if x.startswith("compare: ")]
    assert estimates and not any("trials" in x for x in estimates)  # finished: not work left
    assert all(
        s.n_trials == 5 for s in optuna.get_all_study_summaries(storage=study_env["storage"])
    )


def test_the_demo_study_has_headroom_settings():
    """Three experts with their own label spaces and heads: averaging their bodies costs."""
    from evolver_opt.search.config import load_config

    with resources.as_file(resources.files("evolver_opt.experiments") / "demo.toml") as path:
        config = load_config(path)
    assert config.heads == "separate" and len(config.zoo_experts) == 3
    assert config.dev == config.zoo_experts == config.test_in_domain


def test_the_demo_trains_the_reference_studys_experts_briefly_and_searches_in_a_form():
    demo = tomllib.loads((resources.files("evolver_opt.experiments") / "demo.toml").read_text())
    reference = tomllib.loads(
        (Path(__file__).parents[2] / "studies" / "multitask-8.toml").read_text()
    )
    same = ("base", "max_length", "lr", "batch_size", "seed", "head_seed", "warmup_fraction")
    assert all(demo["zoo"][k] == reference["zoo"][k] for k in same)
    assert demo["zoo"]["name"] != reference["zoo"]["name"]  # its own, shorter-trained experts
    assert set(demo["zoo"]["domains"]) <= set(reference["zoo"]["domains"])
    assert demo["study"]["form"] == "iso_cts+wudi+tsv_m" and demo["study"]["bounds"][1] >= 3.8


def test_cli_lists_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in (
        "demo",
        "run",
        "compare",
        "export",
        "studies",
        "merge",
        "data",
        "zoo",
        "evaluate",
    ):
        assert command in result.output


def test_a_demo_in_a_method_form_shows_the_floor_and_the_forms_own_tuned_merge(study_env, tmp_path):
    study_file = write_study(
        tmp_path / "s.toml", study_env["world"], form='"iso_cts"', bounds="[0.0, 4.0]"
    )
    args = ["demo", "--study", str(study_file), "--budget", "9", "--storage", study_env["storage"]]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "| static | average |" in result.output and "iso_cts(dev grid)" in result.output
    assert "| static | ties |" not in result.output  # the README's benchmark ranks the rest
