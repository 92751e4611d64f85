"""Blend forms: coefficients per (method, group) over several methods' merges, each method's
tuned static merge one of the start points."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
import torch

from evolver_opt.core.genome import Genome
from evolver_opt.errors import ConfigError
from evolver_opt.experiments.baselines import search_grid
from evolver_opt.experiments.eta import compare_eta
from evolver_opt.merge import get_method
from evolver_opt.merge.methods import method_class
from evolver_opt.reports.notes import best_recipe
from evolver_opt.search.config import load_config
from evolver_opt.search.forms import blend_start_points
from evolver_opt.search.objective import build_setup, coefficients_of
from tests.tiny_world import invoke_run, write_study

BLEND = '"tsv_m+iso_c"'


def _setup(tmp_path, world, **overrides):
    fields = {"form": BLEND, "bounds": "[0.0, 2.0]", **overrides}
    return build_setup(load_config(write_study(tmp_path / "s.toml", world, **fields)),
                       precision_check=False)  # fmt: skip


@pytest.mark.parametrize(
    ("form", "extra", "message"),
    [
        ('"tsv_m+tsv_m"', {}, "a method repeats"),
        ('"tsv_m+slerp"', {}, r"\['slerp'\] is not"),
        (BLEND, {"form_options": "{ common_fraction = 0.5 }"}, "takes no form_options"),
        (BLEND, {"seed_merges": '["tsv_m"]'}, "starts from its methods' tuned merges"),
    ],
)
def test_bad_blends_are_refused_at_load(study_env, tmp_path, form, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_study(tmp_path / "s.toml", study_env["world"], form=form, **extra))


def test_each_methods_start_point_is_its_merge_at_the_scale_its_dev_grid_chose(study_env, tmp_path):
    setup = _setup(tmp_path, study_env["world"])
    engine = setup.engine
    points = setup.named_initial_points()
    assert setup.param_names[0].startswith("w.tsv_m.") and len(setup.param_names) == (
        2 * engine.n_groups
    )
    names = list(points)
    assert names[0] == "tsv_m/2+iso_c/2" and len(names) == 3
    for method in ("tsv_m", "iso_c"):
        grid = [dict(p) for p in method_class(method).grid]
        with engine.model_precision(torch.float32):
            tuned = search_grid(setup, method, grid, echo=lambda _: None)
        scale, dev = setup.blend_scales[method]
        assert scale == pytest.approx(min(tuned.params["lambda"], 2.0))
        assert dev == pytest.approx(tuned.dev) or tuned.params["lambda"] > 2.0
        setup.apply(points[f"{method}(lambda={scale:g})"])
        via_blend = engine.output.clone().float()
        get_method(method).merge(engine, **{"lambda": scale})
        torch.testing.assert_close(via_blend, engine.output.float(), rtol=1e-3, atol=1e-4)
    best = max(setup.blend_scales, key=lambda m: setup.blend_scales[m][1])
    assert list(points)[-1].startswith(f"{best}(lambda=")


def test_a_per_group_blend_mixes_the_methods_per_group(study_env, tmp_path):
    setup = _setup(tmp_path, study_env["world"])
    engine = setup.engine
    n = engine.n_groups
    c = np.zeros((2, n))
    c[0, : n // 2] = 1.0  # tsv_m in the first groups, iso_c in the rest
    c[1, n // 2 :] = 1.0
    engine.apply(c, form=setup.form)
    mixed = engine.output.clone()
    get_method("tsv_m").merge(engine, **{"lambda": 1.0})
    tsv = engine.output.clone()
    get_method("iso_c").merge(engine, **{"lambda": 1.0})
    iso = engine.output.clone()
    cut = engine.layout.group_spans[n // 2][0]
    torch.testing.assert_close(mixed[:cut], tsv[:cut], rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(mixed[cut:], iso[cut:], rtol=1e-3, atol=1e-4)
    assert not torch.allclose(tsv[:cut], iso[:cut])  # the test can tell the methods apart


def test_blend_start_points_pairs_all_and_the_best_last():
    points = blend_start_points({"a": (2.0, 0.5), "b": (1.0, 0.7), "c": (0.5, 0.6)}, 3)
    assert list(points) == [
        "a/2+b/2", "a/2+c/2", "b/2+c/2", "a/3+b/3+c/3", "a(lambda=2)", "c(lambda=0.5)",
        "b(lambda=1)",
    ]  # fmt: skip
    np.testing.assert_allclose(points["a/2+c/2"][:, 0], [1.0, 0.0, 0.25])
    np.testing.assert_allclose(points["a/3+b/3+c/3"][:, 2], [2 / 3, 1 / 3, 0.5 / 3])
    assert all(p.shape == (3, 3) for p in points.values())


def test_the_engine_refuses_a_form_genome_over_other_groups(study_env, tmp_path):
    setup = _setup(tmp_path, study_env["world"])
    engine = setup.engine
    rows = engine.form_rows(setup.form).clone()
    with pytest.raises(ConfigError, match="groups are not the engine's"):
        engine.add_form_rows("x", rows, genome=Genome(("a", "b"), ("g",)))
    with pytest.raises(ConfigError, match=r"rows are \(2, "):
        engine.add_form_rows("x", rows)  # the experts' genome wants N rows
    with pytest.raises(ConfigError, match="shape"):
        engine.apply(np.zeros(engine.genome.shape), form=setup.form)  # N x G, not 2 x G


@pytest.mark.parametrize("sampler", ["evolver-plus", "tpe"])
def test_samplers_search_a_blend_and_its_trials_export(study_env, tmp_path, sampler):
    study_file = write_study(
        tmp_path / "s.toml", study_env["world"], form=BLEND, bounds="[0.0, 2.0]", n_trials="8"
    )
    result = invoke_run(study_file, study_env["storage"], "--sampler", sampler, "--seed", "1")
    assert result.exit_code == 0, result.output
    (summary,) = optuna.get_all_study_summaries(study_env["storage"])
    assert summary.study_name.startswith("tiny-layer-tsv_m+iso_c-")
    study = optuna.load_study(study_name=summary.study_name, storage=study_env["storage"])
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 8 and all(
        {n.split(".")[1] for n in t.params} == {"tsv_m", "iso_c"} for t in trials
    )
    proposed = [t for t in trials if "fixed_params" not in t.system_attrs]
    assert len(proposed) == 5  # 3 start points
    recipe = best_recipe(study)  # the report's recipe and heat map name the methods
    assert recipe["experts"] == ["tsv_m", "iso_c"]
    assert len(recipe["coefficients"]["iso_c"]) == len(recipe["groups"]) > 1
    from click.testing import CliRunner

    from evolver_opt.cli import main

    out = tmp_path / "merged"
    exported = CliRunner().invoke(
        main, ["export", "--storage", study_env["storage"], "--study-name", summary.study_name,
               "--out", str(out)],
    )  # fmt: skip
    assert exported.exit_code == 0, exported.output
    recipe = json.loads((out / "evolver_recipe.json").read_text())
    assert recipe["method"] == "form:tsv_m+iso_c"
    assert "blending the merges of `tsv_m`, `iso_c`" in (out / "README.md").read_text()
    config = load_config(study_file)
    c = coefficients_of(config, _setup(tmp_path, study_env["world"]).engine, study.best_params)
    assert c.shape[0] == 2


def test_a_compare_in_a_blend_reports_each_methods_tuned_merge(study_env, tmp_path):
    from click.testing import CliRunner

    from evolver_opt.cli import main

    study_file = write_study(tmp_path / "s.toml", study_env["world"], bounds="[0.0, 2.0]")
    out = tmp_path / "report"
    result = CliRunner().invoke(
        main,
        ["compare", str(study_file), "--form", "tsv_m+iso_c", "--samplers", "random",
         "--seeds", "1", "--n-trials", "8", "--storage", study_env["storage"], "--out", str(out),
         "--no-progress", "--test-per-split", "6"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())["rows"]
    tuned = {r["name"]: r for r in rows if r["name"].endswith("(dev grid)")}
    assert sorted(tuned) == ["iso_c(dev grid)", "tsv_m(dev grid)"]
    assert len(tuned["tsv_m(dev grid)"]["grid"]) == 8 and len(tuned["iso_c(dev grid)"]["grid"]) == 9
    (search,) = [r for r in rows if r["kind"] == "sampler"]
    assert search["study_name"] == "tiny-layer-tsv_m+iso_c-random-seed0"
    setup = _setup(tmp_path, study_env["world"])
    left = compare_eta(setup, studies=1, n_trials=8, references=7, tuned=False).left
    assert (left["point"], left["tuned"]) == (17, 2)  # both methods' grids are work to do


def test_a_budget_of_only_start_points_is_warned_about_before_any_work(study_env, tmp_path):
    from evolver_opt.search.runner import preflight

    config = load_config(
        write_study(tmp_path / "s.toml", study_env["world"], form='"tsv_m+iso_c+wudi"')
    )
    warned: list[str] = []
    preflight(config, ["tpe"], budget=7, storage=study_env["storage"], warn=warned.append)
    assert len(warned) == 1 and "7 start points (each of ['tsv_m', 'iso_c', 'wudi']" in warned[0]
    preflight(config, ["tpe"], budget=8, storage=study_env["storage"], warn=warned.append)
    assert len(warned) == 1


def test_the_tuned_scales_are_read_back_and_a_damaged_cache_is_redone(
    study_env, tmp_path, monkeypatch
):
    from evolver_opt.search import blend_scales

    first = _setup(tmp_path, study_env["world"])
    points = first.named_initial_points()
    (cached,) = (tmp_path / "cache" / blend_scales.FOLDER).glob("*.json")
    again = _setup(tmp_path, study_env["world"])
    with monkeypatch.context() as m:  # read back: no dev pass at all
        m.setattr(blend_scales, "_tune", lambda *a: pytest.fail("scored again"))
        assert again.named_initial_points() == points
    assert again.blend_scales == first.blend_scales
    data = json.loads(cached.read_text())
    data["scales"]["tsv_m"][0] = 99.0  # outside the bounds: not trusted
    cached.write_text(json.dumps(data))
    calls: list[int] = []
    scales = blend_scales.tune_blend_scales(
        again, lambda: calls.append(1) or 0.5, echo=lambda _: None
    )
    assert len(calls) == 17 and set(scales) == {"tsv_m", "iso_c"}  # both grids scored again
    assert json.loads(cached.read_text())["scales"]["tsv_m"][0] <= 2.0  # and rewritten
