"""Study forms: a method's parts as the search space, its own merge among the start points."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch

from evolver_opt.errors import ConfigError
from evolver_opt.merge import get_method
from evolver_opt.search.config import load_config
from evolver_opt.search.forms import form_start_points, start_scales
from evolver_opt.search.objective import build_setup, evaluate_dev
from tests.tiny_world import invoke_run, write_study


def _config(tmp_path, world, **overrides):
    return load_config(write_study(tmp_path / "s.toml", world, **overrides))


def test_start_points_are_the_method_at_each_grid_scale_nearest_one_last():
    assert start_scales("tsv_m")[-1] == 1.0
    assert sorted(start_scales("tsv_m")) == [0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0]
    points = form_start_points("iso_c", (3, 2), (0.0, 1.5))
    assert list(points)[-1] == "iso_c(lambda=1)"
    assert max(float(p.max()) for p in points.values()) == 1.5  # clipped, deduplicated
    assert len(points) == len({float(p[0, 0]) for p in points.values()})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"form": '"slerp"'}, "form 'slerp' is not one of"),
        ({"seed_merges": '["tsv_m"]'}, "set form = 'tsv_m'"),
        ({"form": '"tsv_m"', "seed_merges": '["average"]'}, "starts from its own merge"),
        ({"form": '"iso_cts"', "form_options": "{ density = 0.2 }"}, "takes form_options"),
        ({"form_options": "{ common_fraction = 0.5 }"}, "need a method form"),
        ({"form": '"tsv_m"', "granularity": '"element"'}, "coefficient granularity"),
    ],
)
def test_bad_forms_are_refused_at_load(study_env, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, study_env["world"], **overrides)


def test_a_trial_at_scale_lambda_scores_the_static_merge(study_env, tmp_path):
    config = _config(tmp_path, study_env["world"], form='"tsv_m"', bounds="[0.0, 2.0]")
    setup = build_setup(config, precision_check=False)
    names = list(setup.named_initial_points())
    assert names[-1] == "tsv_m(lambda=1)" and len(names) == 8
    params = setup.named_initial_points()["tsv_m(lambda=1.4)"]
    setup.apply(params)
    via_form = setup.engine.output.clone()
    via_dev = evaluate_dev(setup).score
    get_method("tsv_m").merge(setup.engine, **{"lambda": 1.4})
    torch.testing.assert_close(via_form.float(), setup.engine.output.float(), rtol=1e-2, atol=1e-3)
    assert evaluate_dev(setup).score == pytest.approx(via_dev, abs=0.05)
    setup.engine.apply(setup.engine.one_hot(0))  # the experts' rows are still the experts
    assert torch.equal(setup.engine.output, setup.engine.stacked[1].to(setup.engine.output.dtype))


@pytest.mark.parametrize("sampler", ["evolver-plus", "random", "cmaes"])
def test_every_sampler_searches_a_form_from_its_start_points(study_env, tmp_path, sampler):
    study_file = write_study(
        tmp_path / "s.toml", study_env["world"], form='"wudi"', bounds="[0.0, 2.0]",
        n_trials="11",
    )  # fmt: skip
    result = invoke_run(study_file, study_env["storage"], "--sampler", sampler, "--seed", "1")
    assert result.exit_code == 0, result.output
    (summary,) = optuna.get_all_study_summaries(study_env["storage"])
    study = optuna.load_study(study_name=summary.study_name, storage=study_env["storage"])
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 11
    starts = [t for t in trials if "fixed_params" in t.system_attrs]
    scales = sorted({round(v, 6) for t in starts for v in set(t.params.values())})
    assert scales == [0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6]  # wudi's grid, one point each
    proposed = [t for t in trials if "fixed_params" not in t.system_attrs]
    assert proposed and all(len(set(np.round(list(t.params.values()), 6))) > 1 for t in proposed)
    assert study.user_attrs["evolver_opt:config"]["form"] == "wudi"


def test_a_data_form_needs_the_experts_training_data(world, tmp_path):
    # ``world``: copies of the experts, so the statistics written beside them stay here
    config = _config(tmp_path, world, form='"regmean"', form_options="{ examples_per_expert = 8 }")
    setup = build_setup(config, precision_check=False)
    assert "regmean" in setup.engine.forms
    assert list(setup.named_initial_points()) == ["regmean(lambda=1)"]


def test_overriding_the_form_takes_its_start_points_and_names_the_studies(study_env, tmp_path):
    from evolver_opt.search.config import override_config

    config = _config(tmp_path, study_env["world"], bounds="[0.0, 2.0]")
    assert config.seed_merges == ("average",) and config.search_label == "tiny-layer"
    tsv = override_config(config, {"form": "tsv_m"}, source="--form")
    assert tsv.seed_merges == ("tsv_m",) and tsv.search_label == "tiny-layer-tsv_m"
    assert tsv.identity() != config.identity()
    back = override_config(tsv, {"form": "average"}, source="--form")
    assert back.seed_merges == ("average",) and back.search_label == "tiny-layer"


def test_a_compare_in_a_form_reports_the_forms_own_tuned_merge(study_env, tmp_path):
    import json

    from click.testing import CliRunner

    from evolver_opt.cli import main

    study_file = write_study(tmp_path / "s.toml", study_env["world"], bounds="[0.0, 2.0]")
    out = tmp_path / "report"
    result = CliRunner().invoke(
        main,
        ["compare", str(study_file), "--form", "iso_c", "--samplers", "random,tpe", "--seeds", "1",
         "--n-trials", "10", "--storage", study_env["storage"], "--out", str(out),
         "--no-progress", "--test-per-split", "6"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())["rows"]
    (own,) = [r for r in rows if r["name"] == "iso_c(dev grid)"]
    assert own["kind"] == "static" and len(own["grid"]) == 9
    (search,) = [r for r in rows if r["kind"] == "sampler" and r["name"] == "random"]
    assert search["study_name"] == "tiny-layer-iso_c-random-seed0"
    # after the first study only the second is left (the tuned row was scored before both)
    assert "compare: 10 trials, 1 test scoring of a study's answer left" in result.output
    assert "tuned grid point" not in result.output
    assert search["best_dev"] >= max(p["dev"] for p in own["grid"]) - 0.1  # bf16 vs fp32


def test_the_studies_of_one_process_score_the_shared_start_points_once(study_env, tmp_path):
    from evolver_opt.experiments.compare import run_compare

    config = _config(tmp_path, study_env["world"], granularity='"model"')
    setup = build_setup(config, precision_check=False)
    run_compare(
        setup, ["random", "tpe"], seeds=1, n_trials=5, storage=study_env["storage"],
        echo=lambda _: None,
    )  # fmt: skip
    studies = [
        optuna.load_study(study_name=s.study_name, storage=study_env["storage"])
        for s in optuna.get_all_study_summaries(study_env["storage"])
    ]
    first, second = (
        [t for t in s.get_trials() if "fixed_params" in t.system_attrs] for s in studies
    )
    assert len(first) == len(second) == 4  # 3 experts and the average
    assert [t.value for t in first] == [t.value for t in second]
    reused = [t for t in first + second if t.user_attrs.get("score_reused")]
    assert len(reused) == 4 and all("dev:vader-tweets/dev" in t.user_attrs for t in reused)


def test_a_rerun_reads_the_reference_rows_back_from_the_cache(study_env, tmp_path, monkeypatch):
    from evolver_opt.experiments import compare

    config = _config(tmp_path, study_env["world"], granularity='"model"', test_per_split="6")
    setup = build_setup(config, precision_check=False)
    scored = []
    real = compare._reference_row
    monkeypatch.setattr(
        compare, "_reference_row", lambda *a, **k: scored.append(a[1]) or real(*a, **k)
    )
    run = {"seeds": 1, "n_trials": 5, "storage": study_env["storage"], "echo": lambda _: None}
    first = compare.run_compare(setup, ["random"], **run)
    assert len(scored) == 4 + 3  # average, task_arithmetic, ties, dare; 3 experts
    again = compare.run_compare(setup, ["random"], **run)
    assert len(scored) == 7  # nothing scored again
    assert [(r.name, r.test, r.best_dev) for r in again] == [
        (r.name, r.test, r.best_dev) for r in first
    ]


def test_the_forms_own_tuned_row_reuses_the_parts_the_study_built(study_env, tmp_path):
    from unittest import mock

    from evolver_opt.experiments.baselines import search_grid

    config = _config(tmp_path, study_env["world"], form='"tsv_m"', bounds="[0.0, 2.0]")
    setup = build_setup(config, precision_check=False)
    tsv = type(get_method("tsv_m"))
    with mock.patch.object(tsv, "task_parts", autospec=True) as parts:
        chosen = search_grid(setup, "tsv_m", [{"lambda": 0.6}, {"lambda": 1.2}], echo=print)
        chosen.apply()
    assert parts.call_count == 0 and list(setup.engine.forms) == ["tsv_m"]
