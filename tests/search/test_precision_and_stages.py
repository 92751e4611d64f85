"""bfloat16 evaluation (auto, the agreement check, the fallback, float32 re-scoring), staged
dev scoring with Optuna's pruners, racing with separate heads, and the secondary score."""

from __future__ import annotations

import warnings

import numpy as np
import optuna
import pytest
import torch

from evolver_opt import ConfigError
from evolver_opt.evaluation import precision as precision_module
from evolver_opt.search import precision_check
from evolver_opt.search.attributes import ATTR_PRECISION
from evolver_opt.search.config import load_config
from evolver_opt.search.objective import MergeObjective, build_setup, evaluate_dev
from evolver_opt.search.runner import open_study, run_study, study_attrs
from tests.tiny_world import write_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _config(tmp_path, world, file="s.toml", precision=None, **overrides):
    path = write_study(tmp_path / file, world, **overrides)
    if precision is not None:
        path.write_text(path.read_text() + f'precision = "{precision}"\n')
    return load_config(path)


# -- resolving auto -----------------------------------------------------------------------
def test_auto_follows_cpu_flags_cuda_and_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("EVOLVER_OPT_PRECISION")
    info = tmp_path / "cpuinfo"
    info.write_text("processor: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile\n")
    assert precision_module.cpu_bf16_flags.__wrapped__(info) == ("avx512_bf16",)
    info.write_text("flags : fpu sse2 avx2\n")
    assert precision_module.cpu_bf16_flags.__wrapped__(info) == ()
    assert precision_module.cpu_bf16_flags.__wrapped__(tmp_path / "absent") == ()
    monkeypatch.setattr(precision_module, "cpu_bf16_flags", lambda: ("amx_bf16",))
    assert precision_module.resolve("auto", "cpu") == "bf16"
    assert precision_module.resolve("auto", "cuda:0") == "bf16"
    assert precision_module.resolve("fp32", "cuda") == "fp32"
    monkeypatch.setattr(precision_module, "cpu_bf16_flags", lambda: ())
    assert precision_module.resolve("auto", "cpu") == "fp32"
    assert precision_module.resolve("bf16", "cpu") == "bf16"  # asked for: kept
    monkeypatch.setenv("EVOLVER_OPT_PRECISION", "bf16")
    assert precision_module.resolve("auto", "cpu") == "bf16"
    assert precision_module.resolve("fp32", "cpu") == "fp32"  # the env var decides auto only
    monkeypatch.setenv("EVOLVER_OPT_PRECISION", "half")
    with pytest.raises(ConfigError, match=r"EVOLVER_OPT_PRECISION='half' is not one of"):
        precision_module.resolve("auto", "cpu")


def test_precision_is_in_the_identity_and_the_old_bf16_spelling_still_loads(tiny_world, tmp_path):
    fp32 = _config(tmp_path, tiny_world, "a.toml", precision="fp32")
    bf16 = _config(tmp_path, tiny_world, "b.toml", precision="bf16")
    assert fp32.identity_hash() != bf16.identity_hash()
    assert bf16.identity()["evaluation"]["bf16"] is True
    old = write_study(tmp_path / "old.toml", tiny_world)
    old.write_text(old.read_text() + "bf16 = true\n")
    assert load_config(old).evaluation.precision == "bf16"
    assert load_config(old).identity_hash() == bf16.identity_hash()
    element = write_study(tmp_path / "e.toml", tiny_world, granularity='"element"')
    element.write_text(element.read_text() + 'precision = "bf16"\n')
    with pytest.raises(ConfigError, match='element.*precision = "fp32"'):
        load_config(element)


# -- the agreement check --------------------------------------------------------------------
def test_bf16_setup_checks_agreement_on_every_start_point(study_env, tmp_path):
    config = _config(tmp_path, study_env["world"], precision="bf16")
    setup = build_setup(config)
    check = setup.precision
    assert (
        check.used == "bf16" and setup.engine.model.bert.pooler.dense.weight.dtype == torch.bfloat16
    )
    assert set(check.agreement) == {*setup.engine.model_names, "average"}
    assert all(0.9 <= v <= 1.0 for v in check.agreement.values())
    study = open_study(
        setup.config, setup.initial_points(), sampler="random", storage=study_env["storage"],
        precision=check,
    )  # fmt: skip
    stored = study_attrs(study)[ATTR_PRECISION]
    assert stored["used"] == "bf16" and stored["agreement"] == check.agreement


def test_auto_falls_back_to_float32_with_one_warning_when_agreement_is_low(
    study_env, tmp_path, monkeypatch
):
    monkeypatch.setenv("EVOLVER_OPT_PRECISION", "bf16")  # auto resolves to bf16 here
    monkeypatch.setattr(precision_check, "MIN_AGREEMENT", 1.01)  # nothing can reach it
    config = _config(tmp_path, study_env["world"])
    with pytest.warns(UserWarning, match="scoring in float32 instead") as caught:
        setup = build_setup(config)
    assert len([w for w in caught if "float32" in str(w.message)]) == 1
    assert setup.precision.used == "fp32" and setup.config.evaluation.precision == "fp32"
    assert all(p.dtype == torch.float32 for p in setup.engine.model.parameters())
    assert setup.config.identity()["evaluation"].get("bf16") is not True
    asked = _config(tmp_path, study_env["world"], "b.toml", precision="bf16")
    with pytest.warns(UserWarning, match="kept because precision"):
        kept = build_setup(asked)
    assert kept.precision.used == "bf16"


def test_bf16_and_fp32_studies_pick_the_same_model(study_env, tmp_path):
    best = {}
    for precision in ("fp32", "bf16"):
        config = _config(tmp_path, study_env["world"], f"{precision}.toml", precision=precision,
                         name=f'"tiny-{precision}"')  # fmt: skip
        setup = build_setup(config)
        study = open_study(setup.config, setup.initial_points(), sampler="random", seed=3,
                           storage=study_env["storage"])  # fmt: skip
        run_study(study, MergeObjective(setup), n_trials=10)
        best[precision] = study.best_trial
    assert best["fp32"].params == best["bf16"].params
    assert best["fp32"].number == best["bf16"].number
    assert best["fp32"].value == pytest.approx(best["bf16"].value)


# -- staged scoring and pruners ---------------------------------------------------------
def test_evaluator_stages_are_nested_prefixes_and_end_at_the_full_score(study_env, tmp_path):
    setup = build_setup(_config(tmp_path, study_env["world"]))
    setup.engine.apply(setup.engine.uniform())
    reported = []
    result = evaluate_dev(setup, stages=(0.25, 0.5, 1.0), on_stage=lambda *a: reported.append(a))
    full = evaluate_dev(setup)
    assert [r[0] for r in reported] == [0, 1, 2]
    assert [r[2] for r in reported] == sorted({r[2] for r in reported})  # growing prefixes
    assert reported[-1][2] == full.n_total and reported[-1][1] == pytest.approx(full.score)
    assert result.score == full.score and result.logprob == pytest.approx(full.logprob)
    # A stage's value is the accuracy over the examples its prefix holds, per split then mean.
    ev = setup.evaluator
    plan = ev._schedule(setup.dev_keys, (0.25, 0.5, 1.0))
    seen_keys = {k for k, *_ in plan[0]}
    assert seen_keys == set(setup.dev_keys)  # every task in the first stage (interleaved)
    first = {}
    for key, b, lo, hi in plan[0]:
        batch = ev.batches(key)[b].rows(lo, hi)
        hits, n = first.get(key, (0, 0))
        with torch.inference_mode():
            pred = ev._predict(batch)
        first[key] = (hits + int((pred == batch.labels).sum()), n + len(batch.labels))
    assert reported[0][1] == pytest.approx(np.mean([h / n for h, n in first.values()]))


def test_a_pruner_stops_random_trials_with_reported_stages_but_never_start_points(
    study_env, tmp_path
):
    config = _config(tmp_path, study_env["world"])
    path = tmp_path / "pruned.toml"
    path.write_text(
        (tmp_path / "s.toml").read_text().replace("[study.evaluation]", "[study.pruner]\n"
        'name = "median"\noptions = {n_startup_trials = 2}\n\n[study.evaluation]')
    )  # fmt: skip
    config = load_config(path)
    assert config.pruner.name == "median"
    setup = build_setup(config)
    study = open_study(setup.config, setup.initial_points(), sampler="random", seed=0,
                       storage=study_env["storage"])  # fmt: skip
    run_study(study, MergeObjective(setup), n_trials=24)
    trials = study.trials
    start = trials[:4]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in start)
    assert all(not t.intermediate_values for t in start)  # start points are not staged
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "the median pruner stops some random trials"
    total = setup.evaluator.n_examples(setup.dev_keys)
    for t in pruned:
        steps = sorted(t.intermediate_values)
        assert t.user_attrs["examples_seen"] == steps[-1] < total
        assert t.user_attrs["pruned"]["value"] == pytest.approx(t.intermediate_values[steps[-1]])
    for t in trials[4:]:
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert max(t.intermediate_values) == total
            assert t.intermediate_values[total] == pytest.approx(t.value)
            assert t.user_attrs["examples_seen"] == total
    # The reported stages are those of the dev set the evaluator scores, replayed exactly.
    t = pruned[0]
    setup.engine.apply(setup.coefficients(t.params))
    replay = []
    evaluate_dev(setup, stages=config.pruner.stages, on_stage=lambda *a: replay.append(a))
    for stage, value, seen in replay[: len(t.intermediate_values)]:
        assert t.intermediate_values[seen] == pytest.approx(value)


def test_racing_works_with_separate_heads_and_counts_examples(study_env, tmp_path):
    config = _config(tmp_path, study_env["world"], heads='"separate"')
    setup = build_setup(config)
    study = open_study(setup.config, setup.initial_points(), sampler="evolver", seed=0,
                       storage=study_env["storage"])  # fmt: skip
    run_study(study, MergeObjective(setup), n_trials=16)
    trials = study.trials
    total = setup.evaluator.n_examples(setup.dev_keys)
    assert all(t.user_attrs["examples_seen"] > 0 for t in trials)
    assert any(t.user_attrs.get("raced") for t in trials)
    lost = [t for t in trials if "race_lost" in t.user_attrs]
    for t in lost:
        assert t.user_attrs["examples_seen"] < total
        assert t.user_attrs["race_lost"]["best_possible"] < t.user_attrs["race_lost"]["parent"]
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(np.isfinite(t.user_attrs["dev_logprob"]) and t.user_attrs["dev_logprob"] < 0
               for t in done)  # fmt: skip
    # a complete trial's score is the mean of its per-task scores, each with its own head
    t = done[-1]
    assert t.value == pytest.approx(np.mean([t.user_attrs[f"dev:{k}"] for k in setup.dev_keys]))


def test_bad_pruner_settings_fail_at_load(tiny_world, tmp_path):
    base = write_study(tmp_path / "s.toml", tiny_world).read_text()
    for table, message in (
        ('name = "median"\noptions = {bogus = 1}', "unknown option 'bogus'"),
        ('name = "median"\nstages = [0.5, 0.25, 1.0]', "increasing"),
        ('name = "median"\nstages = [0.5]', "ending with 1.0"),
        ('name = "hyperband"', "'none', 'median', 'successive_halving' or 'patient'"),
    ):
        path = tmp_path / "bad.toml"
        path.write_text(
            base.replace("[study.evaluation]", f"[study.pruner]\n{table}\n\n[study.evaluation]")
        )
        with pytest.raises(ConfigError, match=message):
            load_config(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path.write_text(base.replace("[study.evaluation]",
                        '[study.pruner]\nname = "patient"\noptions = {patience = 2}\n\n[study.evaluation]'))  # fmt: skip
        assert load_config(path).pruner.make() is not None


def test_cli_precision_option_is_recorded_on_the_study_and_its_note(study_env, tmp_path):
    from click.testing import CliRunner

    from evolver_opt.cli import main
    from evolver_opt.reports.notes import study_note

    path = write_study(tmp_path / "s.toml", study_env["world"])
    storage = study_env["storage"]
    ran = CliRunner().invoke(
        main,
        ["run", str(path), "--sampler", "random", "--n-trials", "5", "--storage", storage,
         "--precision", "bf16", "--no-progress"],
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    assert "precision bf16 (configured)" in ran.output
    study = optuna.load_study(study_name="tiny-layer-random-seed0", storage=storage)
    assert study.user_attrs[ATTR_PRECISION]["used"] == "bf16"
    note = study_note(study)
    assert "**Precision**: bf16 (setting bf16: configured)" in note and "agreement" in note
    again = CliRunner().invoke(
        main, ["run", str(path), "--sampler", "random", "--n-trials", "6", "--storage", storage,
               "--precision", "fp32", "--no-progress"],
    )  # fmt: skip
    assert again.exit_code != 0 and 'precision = "bf16"' in again.output  # scored in bf16


def test_each_dev_task_is_scored_with_its_own_head_in_every_stage(study_env, tmp_path, monkeypatch):
    setup = build_setup(_config(tmp_path, study_env["world"], heads='"separate"'))
    engine = setup.engine
    calls = []
    real = engine.use_head
    monkeypatch.setattr(engine, "use_head", lambda name: (calls.append(name), real(name)))
    runs = []
    forward = engine.model.forward
    monkeypatch.setattr(
        engine.model,
        "forward",
        lambda *a, **k: (runs.append(engine.active_head), forward(*a, **k))[1],
    )
    evaluate_dev(setup, stages=(0.5, 1.0), on_stage=lambda *a: None)
    order = [setup.head_of[k] for k in setup.dev_keys]
    assert calls == order + order  # two stages, each switching to every task's head once
    assert runs and set(runs) == set(order)
    assert all(head is not None for head in runs)


@pytest.mark.parametrize(
    ("sampler", "used"), [("evolver-element", "fp32"), ("evolver-merger:ties", "bf16")]
)
def test_weight_space_samplers_score_in_their_precision_and_say_so(
    sampler, used, study_env, tmp_path
):
    """evolver-element copies the working model to and from its float32 rows: float32. A
    merger writes each merge into the working model once: the study's precision (issue 29)."""
    from evolver_opt.search.element import make_objective

    setup = build_setup(_config(tmp_path, study_env["world"], precision="bf16"))
    assert setup.precision.used == "bf16"
    study = open_study(setup.config, setup.initial_points(), sampler=sampler, seed=0,
                       storage=study_env["storage"], precision=setup.precision)  # fmt: skip
    assert study.user_attrs[ATTR_PRECISION]["used"] == used
    assert study.user_attrs["evolver_opt:config"]["evaluation"]["precision"] == used
    objective = make_objective(setup, sampler)
    dtypes = []
    real = objective._score
    objective._score = lambda t: (dtypes.append(setup.engine.model_dtype), real(t))[1]
    run_study(study, objective, n_trials=8)
    assert dtypes and set(dtypes) == {torch.float32 if used == "fp32" else torch.bfloat16}
    assert setup.engine.model_dtype == torch.bfloat16  # restored for coefficient studies
    with pytest.raises(ConfigError, match="float32"):
        objective.apply_answer(study)
    with setup.engine.model_precision(torch.float32):
        assert objective.apply_answer(study) is not None


def test_a_rerun_of_the_same_setup_reuses_the_cached_precision_check(
    study_env, tmp_path, monkeypatch
):
    from evolver_opt.search import objective, precision_cache

    config = _config(tmp_path, study_env["world"], precision="bf16")
    calls = []
    real = objective.check_precision

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(objective, "check_precision", counted)
    first = build_setup(config).precision
    second = build_setup(config).precision
    assert len(calls) == 1 and second.agreement == first.agreement
    assert second.used == first.used and "cached check" in second.reason
    for path in (study_env["tmp"] / "cache" / precision_cache.FOLDER).iterdir():
        path.write_text('{"setting": "bf16", "used": "int8"}')  # damaged: checked again
    assert build_setup(config).precision.agreement == first.agreement and len(calls) == 2
    other = _config(tmp_path, study_env["world"], "b.toml", precision="bf16", dev_per_split="3")
    build_setup(other)  # another dev sample: another check
    assert len(calls) == 3
