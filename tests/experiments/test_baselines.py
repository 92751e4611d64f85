"""Tuned static baselines: grid choices on dev only, cached Fisher/RegMean statistics, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from evolver_opt.cli import main
from evolver_opt.data import reporting
from evolver_opt.errors import SplitError
from evolver_opt.experiments import baselines
from evolver_opt.experiments.baselines import (
    TA_LAMBDAS,
    data_baseline,
    default_grids,
    search_grid,
    select_baselines,
)
from evolver_opt.merge import get_method
from evolver_opt.reports.report import rows_from_json
from evolver_opt.search import merge_stats
from evolver_opt.search.config import load_config
from evolver_opt.search.objective import build_setup, evaluate_dev
from tests.tiny_world import DOMAINS, write_study

NAMES = [
    "task_arithmetic(dev grid)", "ties(dev grid)", "dare(dev grid)", "dare_ties(dev grid)",
    "iso_c(dev grid)", "iso_cts(dev grid)", "tsv_m(dev grid)", "wudi(dev grid)", "fisher",
    "regmean", "regmean_pp",
]  # fmt: skip


def _setup(world: dict, tmp_path: Path, **overrides):
    return build_setup(load_config(write_study(tmp_path / "s.toml", world, **overrides)))


def _argmax(points: list[dict]) -> int:
    devs = [p["dev"] for p in points]
    return devs.index(max(devs))


def test_each_grid_choice_is_the_argmax_of_its_recorded_dev_scores(world, tmp_path, monkeypatch):
    setup = _setup(world, tmp_path)
    scored: list[str] = []
    real_dev_score = setup.evaluator.dev_score

    def spy(keys, **kwargs):
        scored.extend(keys)
        return real_dev_score(keys, **kwargs)

    def no_test_split(*args, **kwargs):
        raise AssertionError("a test split was read while choosing a baseline")

    with monkeypatch.context() as m:
        m.setattr(setup.evaluator, "dev_score", spy)
        m.setattr(reporting, "load_test_split", no_test_split)
        chosen = select_baselines(setup, n_examples=8, echo=lambda _: None)
    assert [b.name for b in chosen] == NAMES
    assert scored and all(key.endswith("/dev") for key in scored)
    assert all(key.endswith("/dev") for key in setup.evaluator.splits)
    grids = default_grids()
    assert [p["lambda"] for p in grids["task_arithmetic"]] == list(TA_LAMBDAS)
    assert list(TA_LAMBDAS) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    for b in chosen[:3]:
        assert [p["params"] for p in b.grid] == grids[b.method]
        best = _argmax(b.grid)
        assert b.params == b.grid[best]["params"] and b.dev == b.grid[best]["dev"]
    ta = chosen[0].grid
    assert len({p["dev"] for p in ta}) > 1  # the grid discriminates: the argmax is a real choice
    assert set(chosen[2].params) == {"density", "lambda", "seed"}
    with setup.engine.model_precision(torch.float32):
        for b in chosen:  # re-merging the choice reproduces its dev score
            b.apply()
            assert evaluate_dev(setup).score == pytest.approx(b.dev)


def test_a_selection_evaluator_holding_a_test_split_is_refused(world, tmp_path, monkeypatch):
    setup = _setup(world, tmp_path)
    test = reporting.load_test_split(DOMAINS[0])
    monkeypatch.setitem(setup.evaluator.splits, test.key, test)
    with pytest.raises(SplitError, match="is a test split and may not be used"):
        search_grid(setup, "task_arithmetic", [{"lambda": 0.5}], echo=lambda _: None)


@pytest.mark.parametrize("kind", ["fisher", "regmean"])
def test_statistics_are_cached_next_to_each_expert_and_the_cached_merge_is_exact(
    kind, world, tmp_path, monkeypatch
):
    setup = _setup(world, tmp_path, heads='"separate"')
    engine = setup.engine
    assert not engine.heads_merged
    calls = []
    compute = merge_stats.compute_stats

    def counted(kind_, engine_, i, batches):
        out = compute(kind_, engine_, i, batches)
        calls.append((i, engine_.active_head))  # computed with the expert's own head
        return out

    monkeypatch.setattr(merge_stats, "compute_stats", counted)
    first = data_baseline(setup, kind, n_examples=12, echo=lambda _: None)
    merged = engine.output.clone()
    assert calls == list(enumerate(engine.model_names))
    for path, name in zip(first.params["statistics"], engine.model_names, strict=True):
        assert Path(path).parent == world["experts"][name] / "merge-stats"
        stored = load_file(path)
        assert stored and not any(n.startswith("classifier") for n in stored)  # the body only
    engine.apply(engine.uniform())
    second = data_baseline(setup, kind, n_examples=12, echo=lambda _: None)
    assert len(calls) == 3  # loaded, not computed
    assert second.params == first.params and second.dev == first.dev
    assert torch.equal(engine.output, merged)
    # The uncached merge: the method itself on the same training batches.
    spec = merge_stats.spec_for(setup, 12)
    size = 1 if kind == "fisher" else spec.batch_size
    examples = {
        n: merge_stats.training_batches(
            setup, merge_stats.training_sample(n, 12), size, spec.max_length
        )
        for n in engine.model_names
    }
    engine.apply(engine.uniform())
    get_method(kind).merge(engine, examples=examples)
    assert torch.equal(engine.output, merged)
    data_baseline(setup, kind, n_examples=10, echo=lambda _: None)  # another sample: new files
    assert len(calls) == 6


def test_the_baselines_command_writes_compare_rows(world, tmp_path):
    study_file = write_study(tmp_path / "s.toml", world)
    out = tmp_path / "baselines.json"
    result = CliRunner().invoke(
        main,
        ["baselines", str(study_file), "--examples", "8", "--test-per-split", "6",
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    _, rows = rows_from_json(out)
    assert [r.name for r in rows] == NAMES
    sizes = {"task_arithmetic(dev grid)": 10, "ties(dev grid)": 25, "dare(dev grid)": 25}
    sizes |= {"iso_c(dev grid)": 9, "iso_cts(dev grid)": 8, "tsv_m(dev grid)": 8}
    sizes |= {"wudi(dev grid)": 7, "dare_ties(dev grid)": 25}
    for r in rows:
        assert r.kind == "static" and r.seed is None and r.test_in is not None
        assert set(r.test) == {*DOMAINS, "uci-imdb"} and r.test_in_domain == list(DOMAINS)
        assert all(len(hits) == 6 for hits in r.test_correct.values())
        assert len(r.grid) == r.trials == sizes.get(r.name, 0)
        if r.grid:
            assert r.params == r.grid[_argmax(r.grid)]["params"]
        else:
            assert r.params["examples_per_expert"] == 8
            if r.name != "regmean_pp":  # RegMean++'s Gram matrices depend on the merge
                assert all(Path(p).is_file() for p in r.params["statistics"])
    assert "ties(dev grid): density=" in result.output and f"wrote {out}" in result.output
    # An older results.json, without the new fields, still loads.
    payload = json.loads(out.read_text())
    for row in payload["rows"]:
        del row["params"], row["grid"]
    out.write_text(json.dumps(payload))
    _, old = rows_from_json(out)
    assert old[0].params == {} and old[0].grid == []


def test_compare_adds_the_tuned_baselines_behind_a_flag(world, tmp_path, study_env, monkeypatch):
    small = {m: grid[:2] for m, grid in default_grids().items()}  # the wiring, not the grids
    monkeypatch.setattr(baselines, "default_grids", lambda: small)
    study_file = write_study(tmp_path / "s.toml", world, granularity='"model"')
    out = tmp_path / "report"
    result = CliRunner().invoke(
        main,
        ["compare", str(study_file), "--samplers", "random", "--seeds", "1", "--n-trials", "2",
         "--storage", study_env["storage"], "--out", str(out), "--no-progress",
         "--tuned-baselines"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())["rows"]
    static = [r["name"] for r in rows if r["kind"] == "static"]
    assert static == ["average", "task_arithmetic", "ties", "dare", *NAMES]
    report = (out / "report.md").read_text()
    assert "| static | ties(dev grid) |" in report and "- dare(dev grid): density=" in report
    assert [len(r["grid"]) for r in rows if r["name"] in NAMES] == [2] * 8 + [0] * 3


def test_baselines_out_refuses_an_existing_file_before_any_work(world, tmp_path, monkeypatch):
    """Issue 27, item 6: ``--out study.toml`` replaced the study file with JSON."""
    study_file = write_study(tmp_path / "s.toml", world)
    before = study_file.read_text()

    def no_work(*args, **kwargs):
        raise AssertionError("the setup was built before --out was checked")

    monkeypatch.setattr("evolver_opt.search.objective.build_setup", no_work)
    result = CliRunner().invoke(main, ["baselines", str(study_file), "--out", str(study_file)])
    assert result.exit_code == 2 and "exists; pass --overwrite" in result.output, result.output
    assert study_file.read_text() == before


def test_baselines_out_is_written_atomically_and_overwritten_when_asked(
    world, tmp_path, monkeypatch
):
    study_file = write_study(tmp_path / "s.toml", world)
    out = tmp_path / "rows.json"
    out.write_text("old")
    monkeypatch.setattr(baselines, "baseline_rows", lambda setup, **kw: [])
    written = []
    real_replace = __import__("os").replace

    def spy(src, dst):
        written.append((Path(src).parent, Path(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr("os.replace", spy)
    args = ["baselines", str(study_file), "--out", str(out), "--overwrite"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["rows"] == []
    assert (tmp_path, out) in written  # a temporary file beside it, renamed over it
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".rows")) == []


def test_baselines_methods_picks_a_subset_and_refuses_unknown_names(world, tmp_path):
    study_file = write_study(tmp_path / "s.toml", world)
    out = tmp_path / "rows.json"
    result = CliRunner().invoke(
        main,
        ["baselines", str(study_file), "--methods", "tsv_m,regmean", "--examples", "8",
         "--test-per-split", "6", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    _, rows = rows_from_json(out)
    assert [r.name for r in rows] == ["tsv_m(dev grid)", "regmean"]
    bad = CliRunner().invoke(main, ["baselines", str(study_file), "--methods", "average,slerp"])
    assert bad.exit_code == 1 and "['average', 'slerp'] cannot be tuned" in bad.output


def test_a_parts_method_grid_computes_its_parts_once_and_scores_like_the_merge(world, tmp_path):
    from unittest import mock

    setup = _setup(world, tmp_path)
    tsv = type(get_method("tsv_m"))
    real = tsv.task_parts
    with mock.patch.object(tsv, "task_parts", autospec=True, side_effect=real) as parts:
        chosen = search_grid(setup, "tsv_m", [{"lambda": 0.5}, {"lambda": 1.5}], echo=print)
        assert parts.call_count == 1  # one SVD pass for the whole lambda grid
        chosen.apply()
    applied = setup.engine.output.clone()
    assert not setup.engine.forms  # the grid's rows are freed
    get_method("tsv_m").merge(setup.engine, **chosen.params)
    torch.testing.assert_close(applied, setup.engine.output, rtol=1e-5, atol=1e-6)


def test_a_parts_method_row_survives_the_precision_switch_of_reporting(world, tmp_path):
    """The chosen point's rows are freed after it is applied; leaving float32 keeps its
    weights instead of re-applying a dropped form (a compare crashed there)."""
    setup = _setup(world, tmp_path)
    setup.engine.set_model_dtype(torch.bfloat16)  # a bf16 study, reported in float32
    chosen = search_grid(setup, "wudi", [{"lambda": 0.8}], echo=print)
    with setup.engine.model_precision(torch.float32):
        chosen.apply()
        held = setup.engine.output.clone()
    torch.testing.assert_close(setup.engine.output.float(), held, rtol=1e-2, atol=1e-2)
