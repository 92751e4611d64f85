"""The compare harness writes a report with every sampler, static merge and expert."""

from __future__ import annotations

import json

import optuna
from click.testing import CliRunner

from evolver_opt.cli import main
from tests.study.tiny_world import write_study


def test_compare_writes_report_json_and_plots(study_env, tmp_path):
    study_file = write_study(tmp_path / "s.toml", study_env["world"], granularity='"model"')
    out = tmp_path / "report"
    result = CliRunner().invoke(
        main,
        ["compare", str(study_file), "--samplers", "evolver,random", "--seeds", "2", "--n-trials", "6",
         "--storage", study_env["storage"], "--out", str(out), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("report.md", "results.json", "best_so_far.png", "best_so_far.html"):
        assert (out / name).stat().st_size > 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    samplers = [r for r in rows if r["kind"] == "sampler"]
    assert sorted((r["name"], r["seed"]) for r in samplers) == [
        ("evolver", 0),
        ("evolver", 1),
        ("random", 0),
        ("random", 1),
    ]
    assert {r["name"] for r in rows if r["kind"] == "static"} == {
        "average",
        "task_arithmetic",
        "ties",
        "dare",
    }
    assert {r["name"] for r in rows if r["kind"] == "expert"} == {
        "vader-tweets",
        "vader-movies",
        "vader-amazon",
    }
    for r in samplers:
        assert r["trials"] == 6 and len(r["curve"]) == 6
        assert r["curve"] == sorted(r["curve"]) and r["best_dev"] == r["curve"][-1]
        assert set(r["test"]) == {"vader-tweets", "vader-movies", "vader-amazon", "uci-imdb"}
    # Every sampler starts from the same enqueued points: each expert alone and the average.
    studies = [
        optuna.load_study(study_name=r["study_name"], storage=study_env["storage"])
        for r in samplers
    ]
    first_params = [[t.params for t in s.trials[:4]] for s in studies]
    assert all(p == first_params[0] for p in first_params)
    seeded = [r["best_dev"] for r in rows if r["kind"] == "expert" or r["name"] == "average"]
    for r in samplers:  # each search evaluated the experts and the average: it is at least as good
        assert r["best_dev"] >= max(seeded) - 1e-9
    report = (out / "report.md").read_text()
    assert "| evolver | 2 |" in report and "| random | 2 |" in report


def test_compare_overrides_granularity_and_samples_dev_and_test(study_env, tmp_path):
    study_file = write_study(tmp_path / "s.toml", study_env["world"], granularity='"model"')
    out = tmp_path / "report"
    result = CliRunner().invoke(
        main,
        ["compare", str(study_file), "--samplers", "random", "--seeds", "1", "--n-trials", "5",
         "--granularity", "layer", "--dev-per-split", "3", "--test-per-split", "2",
         "--storage", study_env["storage"], "--out", str(out), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (row,) = [r for r in json.loads((out / "results.json").read_text())["rows"] if r["seed"] == 0]
    assert "-layer-dev3-random-" in row["study_name"]
    study = optuna.load_study(study_name=row["study_name"], storage=study_env["storage"])
    assert study.user_attrs["evolver_opt:identity"]["dev_per_split"] == 3
    assert len(study.trials[0].params) > 3  # layer granularity: more than one float per expert
    n_dev = len(study.user_attrs["evolver_opt:identity"]["dev"])
    assert {t.user_attrs["examples_seen"] for t in study.trials} == {3 * n_dev}
    assert "dev per split 3" in (out / "report.md").read_text()

    bad = CliRunner().invoke(main, ["compare", str(study_file), "--dev-per-split", "0"])
    assert bad.exit_code != 0 and "'--dev-per-split': 0 is not in the range x>=1" in bad.output


def test_a_compare_rerun_resumes_and_reports_the_same_trial_seconds(study_env, tmp_path):
    study_file = write_study(tmp_path / "s.toml", study_env["world"], granularity='"model"')
    args = ["compare", str(study_file), "--samplers", "random", "--seeds", "1", "--n-trials", "5",
            "--storage", study_env["storage"], "--no-progress"]  # fmt: skip
    rows = []
    for out in ("first", "again"):
        result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / out / "results.json").read_text())["rows"]
        rows.append(next(r for r in report if r["kind"] == "sampler"))
    assert rows[1]["trials"] == rows[0]["trials"] == 5  # the rerun added no trial
    assert rows[0]["wall_s"] > 0 and rows[1]["wall_s"] == rows[0]["wall_s"]
    assert rows[1]["test"] == rows[0]["test"]


def test_a_resumed_study_keeps_its_earlier_peak_memory():
    from types import SimpleNamespace

    from evolver_opt.study.memory import ATTR_PEAK_RSS, record_peak

    study = optuna.create_study()
    assert record_peak(study, SimpleNamespace(mib=500.0, scope="block")) == 500.0
    assert record_peak(study, SimpleNamespace(mib=120.0, scope="block")) == 500.0  # a resume
    assert study.user_attrs[ATTR_PEAK_RSS] == {"mib": 500.0, "scope": "block"}
    assert record_peak(study, SimpleNamespace(mib=700.0, scope="block")) == 700.0
    assert study.user_attrs[ATTR_PEAK_RSS]["mib"] == 700.0
