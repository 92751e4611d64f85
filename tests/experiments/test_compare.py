"""The compare harness writes a report with every sampler, static merge and expert."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner, Result

from evolver_opt.cli import main
from tests.tiny_world import write_study


def _compare(study_env, tmp_path, *, seeds: int, n_trials: int) -> tuple[Result, Path]:
    """``evolver-opt compare`` of evolver and random on the tiny model-level study: (result,
    report folder), the command checked to have succeeded."""
    study_file = write_study(tmp_path / "s.toml", study_env["world"], granularity='"model"')
    out = tmp_path / "report"
    result = CliRunner().invoke(
        main,
        ["compare", str(study_file), "--samplers", "evolver,random", "--seeds", str(seeds),
         "--n-trials", str(n_trials), "--storage", study_env["storage"], "--out", str(out),
         "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result, out


def test_compare_writes_report_json_and_plots(study_env, tmp_path):
    result, out = _compare(study_env, tmp_path, seeds=2, n_trials=6)
    etas = [line for line in result.output.splitlines() if line.startswith("compare: ")]
    answers = " test scorings of the studies' answers"
    # every row's work is counted; the reference rows are scored (or read back) first
    assert [e.split(" left: about")[0] for e in etas][:3] == [
        f"compare: 18 trials, 3{answers}",
        f"compare: 12 trials, 2{answers}",
        "compare: 6 trials, 1 test scoring of a study's answer",
    ]
    assert result.output.index("reference rows 1/7") < result.output.index("trials done")
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
    # The ranking: both samplers, Wilcoxon over the two seeds, the gap between average and experts
    assert "## Ranking" in report and "(Wilcoxon, n=2 seeds, " in report
    assert report.index("## Ranking") < report.index("## Every study")
    ranked = json.loads((out / "results.json").read_text())["ranking"]
    assert ranked["tasks"] == ["vader-tweets", "vader-movies", "vader-amazon"]
    by_name = {r["name"]: r for r in rows}
    experts = sum(by_name[t]["test"][t] for t in ranked["tasks"]) / 3  # each on its own task
    average = by_name["average"]["test_in"]
    assert ranked["experts"] == pytest.approx(experts) and ranked["average"] == average
    assert experts > average  # the tiny world has a gap: the gap closed is defined
    assert sorted(s["name"] for s in ranked["samplers"]) == ["evolver", "random"]
    for s in ranked["samplers"]:
        tests = [r["test_in"] for r in samplers if r["name"] == s["name"]]
        assert s["n_seeds"] == 2 and s["test"]["mean"] == pytest.approx(sum(tests) / 2)
        assert s["versus"]["test"] == "wilcoxon" and s["versus"]["n"] == 2
        gap = (s["test"]["mean"] - average) / (experts - average)
        assert s["gap_closed"] == pytest.approx(gap)
        assert f"| {s['name']} | 2 | {s['test']['mean']:.4f} | [" in report
    assert [s["test"]["mean"] for s in ranked["samplers"]] == sorted(
        (s["test"]["mean"] for s in ranked["samplers"]), reverse=True
    )
    for g in ranked["references"]:  # static merges and experts alone: 0 is the average itself
        assert g["gap_closed"] == pytest.approx((g["test_in"] - average) / (experts - average))
    assert {g["name"]: g["gap_closed"] for g in ranked["references"]}["average"] == 0.0
    # Per-task test table (samplers: the median over seeds) and the search-cost table
    line = next(x for x in report.splitlines() if x.startswith("| static | ties | "))
    ties = by_name["ties"]
    cells = [float(c) for c in line.strip("|").split("|")[2:]]
    assert cells[:-1] == pytest.approx([round(ties["test"][t], 4) for t in ties["test"]], abs=1e-4)
    assert "## Search cost" in report and "| evolver | 0 | " in report
    for r in samplers:  # racing saves forward passes; what was seen is counted per trial
        assert 0.0 <= r["examples_saved"] < 1.0 and r["best_dev_fp32"] is None  # fp32 study
    # Each row keeps each test example's correctness; its share is the row's test accuracy.
    for r in rows:
        assert set(r["test_correct"]) == set(r["test"])
        for key, hits in r["test_correct"].items():
            assert set(hits) <= {"0", "1"} and hits.count("1") / len(hits) == r["test"][key]


def test_single_runs_are_compared_by_a_paired_bootstrap_over_test_examples(study_env, tmp_path):
    result, out = _compare(study_env, tmp_path, seeds=1, n_trials=4)
    data = json.loads((out / "results.json").read_text())
    first = data["rows"][0]
    n_test = sum(len(first["test_correct"][t]) for t in first["test_in_domain"])  # in-domain only
    assert first["test_in_domain"] == ["vader-tweets", "vader-movies", "vader-amazon"]
    for s in data["ranking"]["samplers"]:
        assert s["n_seeds"] == 1 and s["test"]["low"] is None
        assert s["versus"]["test"] == "bootstrap" and s["versus"]["n"] == n_test
        assert 0 < s["versus"]["p_value"] <= 1
        mine = next(r for r in data["rows"] if r["name"] == s["name"])
        other = next(r for r in data["rows"] if r["name"] == s["best_other"])
        assert s["versus"]["difference"] == pytest.approx(mine["test_in"] - other["test_in"])
    assert f"(bootstrap, {n_test} test examples)" in result.output  # the printed report
    assert "## Ranking" in result.output and " | n=1 | " in result.output


def test_the_test_reporter_scores_as_the_evaluator_and_keeps_examples_in_split_order(
    study_env, tmp_path
):
    from dataclasses import replace

    import torch

    from evolver_opt.evaluation import Evaluator
    from evolver_opt.experiments.rows import TestReporter
    from evolver_opt.search.config import load_config
    from evolver_opt.search.objective import build_setup

    setup = build_setup(load_config(write_study(tmp_path / "s.toml", study_env["world"])))
    setup.engine.apply(setup.engine.one_hot("vader-movies"))
    reporter = TestReporter(setup)
    scores, correct = reporter.score()
    assert reporter() == scores
    for key, split in reporter.evaluator.splits.items():
        domain = key.split("/")[0]
        assert scores[domain] == reporter.evaluator.evaluate(key).accuracy
        assert len(correct[domain]) == len(split)

    class Parity(torch.nn.Module):
        """Predicts the parity of the token-id sum: varies from example to example."""

        def forward(self, input_ids, attention_mask):
            return (torch.nn.functional.one_hot((input_ids * attention_mask).sum(-1) % 2, 2),)

    reporter.evaluator.model = Parity()  # bucketed batches reorder examples; the string may not
    _, correct = reporter.score()
    for key, split in reporter.evaluator.splits.items():
        hits = correct[key.split("/")[0]]
        assert "0" in hits and "1" in hits  # the check below can tell orders apart
        for j in range(len(split)):  # example j alone: its correctness is the j-th character
            one = replace(split, texts=split.texts[j : j + 1], labels=split.labels[j : j + 1])
            alone = Evaluator(Parity(), setup.tokenizer, [one], max_length=32)
            assert alone.evaluate(key).accuracy == int(hits[j])


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

    from evolver_opt.experiments.memory import ATTR_PEAK_RSS, record_peak

    study = optuna.create_study()
    assert record_peak(study, SimpleNamespace(mib=500.0, scope="block")) == 500.0
    assert record_peak(study, SimpleNamespace(mib=120.0, scope="block")) == 500.0  # a resume
    assert study.user_attrs[ATTR_PEAK_RSS] == {"mib": 500.0, "scope": "block"}
    assert record_peak(study, SimpleNamespace(mib=700.0, scope="block")) == 700.0
    assert study.user_attrs[ATTR_PEAK_RSS]["mib"] == 700.0


def test_run_compare_makes_the_folder_of_a_new_sqlite_file(study_env, tmp_path):
    """`evolver-opt demo` in a new folder: runs/evolver.db's folder does not exist until the
    first study is opened, and the check for finished studies comes before that."""
    from evolver_opt.experiments.compare import run_compare
    from evolver_opt.search.config import load_config
    from evolver_opt.search.objective import build_setup

    study_file = write_study(tmp_path / "s.toml", study_env["world"], granularity='"model"')
    setup = build_setup(load_config(study_file), precision_check=False)
    storage = f"sqlite:///{tmp_path / 'not-made-yet' / 'runs.db'}"
    run = {"seeds": 1, "n_trials": 5, "storage": storage, "echo": lambda _: None}
    (first,) = [r for r in run_compare(setup, ["random"], **run) if r.kind == "sampler"]
    (again,) = [r for r in run_compare(setup, ["random"], **run) if r.kind == "sampler"]
    assert first.trials == again.trials == 5 and again.test == first.test
