"""A merge search end to end on tiny models: config, objective, runner, resume, refusal."""

from __future__ import annotations

import optuna
import pytest
from click.testing import CliRunner

from evolver_opt import ConfigError
from evolver_opt.cli import main
from evolver_opt.search.config import load_config
from evolver_opt.search.objective import MergeObjective, build_setup, evaluate_dev
from evolver_opt.search.runner import open_study, run_study
from tests.tiny_world import invoke_run, write_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_config_errors_name_field_value_and_allowed(tiny_world, tmp_path):
    bad = write_study(tmp_path / "bad.toml", tiny_world, granularity='"block"')
    with pytest.raises(
        ConfigError,
        match=r"study.granularity: Input should be 'model', 'layer', 'tensor' or 'element' \(got 'block'\)",
    ):
        load_config(bad)
    bad = write_study(tmp_path / "bad2.toml", tiny_world, dev='["vader-tweets", "imdb"]')
    with pytest.raises(ConfigError, match="unknown domain 'imdb'; expected one of"):
        load_config(bad)
    bad = write_study(tmp_path / "bad3.toml", tiny_world, bounds="[1.0, 0.0]")
    with pytest.raises(ConfigError, match=r"study.bounds: .*lower < upper"):
        load_config(bad)


def test_objective_one_hot_scores_each_expert_and_records_attributes(study_env, tmp_path):
    config = load_config(write_study(tmp_path / "s.toml", study_env["world"]))
    setup = build_setup(config)
    points = setup.initial_points()
    assert len(points) == 4 and len(points[0]) == len(setup.param_names)  # 3 experts + average
    study = open_study(config, points, sampler="evolver", seed=0, storage=study_env["storage"])
    run_study(study, MergeObjective(setup), n_trials=12)
    trials = study.trials
    assert len(trials) == 12
    first = trials[0]
    assert first.state == optuna.trial.TrialState.COMPLETE
    assert {"merge_s", "eval_s", "raced", "dev:vader-tweets/dev"} <= set(first.user_attrs)
    assert first.value == pytest.approx(
        sum(first.user_attrs[f"dev:{d}/dev"] for d in config.dev) / 3
    )
    # Re-applying trial 0's coefficients reproduces its score (the merge is deterministic).
    setup.engine.apply(setup.coefficients(first.params))
    assert evaluate_dev(setup).score == pytest.approx(first.value)
    raced = [t for t in trials[4:] if t.user_attrs.get("raced")]
    assert raced, "offspring with a known parent score are raced"
    for t in trials:
        if t.state == optuna.trial.TrialState.PRUNED:
            assert t.user_attrs["race_lost"]["best_possible"] < t.user_attrs["race_lost"]["parent"]


def test_resume_with_another_config_is_refused_naming_the_difference(study_env, tmp_path):
    world = study_env["world"]
    config = load_config(write_study(tmp_path / "s.toml", world))
    setup = build_setup(config)
    open_study(config, setup.initial_points(), storage=study_env["storage"], study_name="x")
    changed = load_config(write_study(tmp_path / "s2.toml", world, bounds="[0.0, 2.0]"))
    with pytest.raises(ConfigError, match=r"bounds: stored \[0.0, 1.0\], now \[0.0, 2.0\]"):
        open_study(changed, setup.initial_points(), storage=study_env["storage"], study_name="x")
    with pytest.raises(ConfigError, match="sampler.name: stored 'evolver', now 'random'"):
        open_study(
            config,
            setup.initial_points(),
            sampler="random",
            storage=study_env["storage"],
            study_name="x",
        )


def test_cli_run_then_resume_adds_only_missing_trials(study_env, tmp_path):
    study_file = write_study(tmp_path / "s.toml", study_env["world"], granularity='"model"')
    first = invoke_run(study_file, study_env["storage"], "--n-trials", "6")
    assert first.exit_code == 0, first.output
    assert "ran 6 trials" in first.output
    second = invoke_run(study_file, study_env["storage"], "--n-trials", "9")
    assert second.exit_code == 0, second.output
    assert "ran 3 trials" in second.output
    (summary,) = optuna.get_all_study_summaries(storage=study_env["storage"])
    assert summary.n_trials == 9 and summary.study_name == "tiny-model-evolver-seed0"
    peak = summary.user_attrs["peak_rss_mb"]  # kept for compare's report, as compare does
    assert peak["mib"] > 50 and peak["scope"] in ("block", "process")


def test_cli_export_reloads_with_identical_outputs_and_studies_lists(study_env, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    study_file = write_study(tmp_path / "s.toml", study_env["world"], granularity='"tensor"')
    ran = invoke_run(study_file, study_env["storage"], "--n-trials", "6")
    assert ran.exit_code == 0, ran.output
    runner = CliRunner()
    out = tmp_path / "merged"
    name = "tiny-tensor-evolver-seed0"
    result = runner.invoke(
        main, ["export", "--storage", study_env["storage"], "--study-name", name, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name=name, storage=study_env["storage"])
    setup = build_setup(load_config(study_file))
    setup.engine.apply(setup.coefficients(study.best_trial.params))
    reloaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    ids = torch.tensor([[2, 5, 9, 3]])
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(input_ids=ids).logits, setup.engine.model.eval()(input_ids=ids).logits
        )
    listing = runner.invoke(main, ["studies", "--storage", study_env["storage"]])
    assert name in listing.output and f"{study.best_value:.4f}" in listing.output
    missing = runner.invoke(
        main,
        [
            "export",
            "--storage",
            study_env["storage"],
            "--study-name",
            "nope",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert missing.exit_code != 0 and "no study named 'nope'" in missing.output


@pytest.mark.parametrize("backend", ["journal", "postgres"])
def test_cli_run_on_journal_and_postgresql(backend, study_env, tmp_path, request):
    if backend == "postgres":
        storage = request.getfixturevalue("postgres_url")
        name = request.getfixturevalue("unique_name")
    else:
        storage, name = f"journal:{tmp_path / 'journal.log'}", "tiny-journal"
    study_file = write_study(tmp_path / "s.toml", study_env["world"], granularity='"model"')
    try:
        result = invoke_run(
            study_file, storage, "--study-name", name, "--n-trials", "6", "--n-jobs", "2"
        )
        assert result.exit_code == 0, result.output
        from evolver_opt import open_storage

        study = optuna.load_study(study_name=name, storage=open_storage(storage))
        assert len(study.trials) == 6 and len({t.number for t in study.trials}) == 6
        one_hots = [t for t in study.trials if sorted(t.params.values()) == [0.0, 0.0, 1.0]]
        averages = [t for t in study.trials if len(set(t.params.values())) == 1]
        assert len(one_hots) == 3 and len(averages) == 1  # the shared start points ran once each
    finally:
        if backend == "postgres":
            from evolver_opt import open_storage

            optuna.delete_study(study_name=name, storage=open_storage(storage))


def test_stock_optuna_switch_runs_on_rdbstorage_and_study_optimize(
    study_env, tmp_path, monkeypatch
):
    """$EVOLVER_OPT_STOCK_OPTUNA=1: Optuna's own RDBStorage and study.optimize run the study
    (and resume it) to the same trial count; a bad value is refused by name."""
    from optuna.storages import RDBStorage

    from evolver_opt import open_storage
    from evolver_opt.runtime.batched_storage import BatchedRDBStorage

    monkeypatch.setenv("EVOLVER_OPT_STOCK_OPTUNA", "1")
    opened = open_storage(study_env["storage"], heartbeat_interval=None)
    assert type(opened) is RDBStorage and not isinstance(opened, BatchedRDBStorage)
    optimized = []
    real = optuna.Study.optimize

    def counted(self, *args, **kwargs):
        optimized.append(kwargs["n_trials"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "optimize", counted)
    study_file = write_study(tmp_path / "s.toml", study_env["world"], granularity='"model"')
    first = invoke_run(study_file, study_env["storage"], "--n-trials", "6")
    assert first.exit_code == 0, first.output
    second = invoke_run(study_file, study_env["storage"], "--n-trials", "9")
    assert second.exit_code == 0, second.output
    assert optimized == [6, 3]
    (summary,) = optuna.get_all_study_summaries(storage=study_env["storage"])
    assert summary.n_trials == 9
    monkeypatch.setenv("EVOLVER_OPT_STOCK_OPTUNA", "maybe")
    with pytest.raises(Exception, match="EVOLVER_OPT_STOCK_OPTUNA='maybe' is invalid"):
        open_storage(study_env["storage"])
