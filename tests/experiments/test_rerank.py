"""Top-k re-ranking of a study's answer on a larger dev sample (evolver_opt.experiments.rerank)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from click.testing import CliRunner

from evolver_opt import ConfigError
from evolver_opt.cli import main
from evolver_opt.data import load_split
from evolver_opt.errors import StateError
from evolver_opt.experiments.rerank import ATTR_RERANK, rerank, rerank_setup, top_trials
from evolver_opt.reports.notes import study_note
from evolver_opt.search.config import load_config
from evolver_opt.search.element import make_objective
from evolver_opt.search.objective import build_setup, evaluate_dev
from evolver_opt.search.runner import ATTR_CONFIG, open_study, run_study, study_attrs
from tests.tiny_world import DOMAINS, invoke_run, write_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

STUDY_SAMPLE = 4  # of the tiny world's 9 dev examples per domain


def _no_test_splits(monkeypatch) -> None:
    """Every door to a test split raises (reporting's and the reader beneath load_split)."""
    from evolver_opt.data import api, reporting

    early_bound = reporting.load_test_split  # as a module that imported it by name holds it

    def refuse(*args, **kwargs):
        raise AssertionError(f"a test split was read: {args} {kwargs}")

    monkeypatch.setattr(reporting, "load_test_split", refuse)
    monkeypatch.setattr(reporting, "load_for_report", refuse)
    real_read = api.read_split

    def read_dev_only(domain, name, data_dir=None):
        if name == "test":
            refuse(domain, name)
        return real_read(domain, name, data_dir)

    monkeypatch.setattr(api, "read_split", read_dev_only)
    monkeypatch.setattr(reporting, "read_split", read_dev_only)
    with pytest.raises(AssertionError, match="a test split was read"):
        early_bound("vader-tweets")


@pytest.fixture
def sampled_study(study_env, tmp_path):
    """A finished random-sampler study scored on 4 dev examples per domain."""
    path = write_study(
        tmp_path / "s.toml",
        study_env["world"],
        granularity='"model"',
        dev_per_split=str(STUDY_SAMPLE),
        n_trials="10",
    )
    setup = build_setup(load_config(path))
    study = open_study(
        setup.config,
        setup.initial_points(),
        sampler="random",
        storage=study_env["storage"],
        study_name="sampled",
        precision=setup.precision,
    )
    run_study(study, make_objective(setup, "random"), n_trials=10)
    return study, path


def test_rerank_rescores_the_top_k_on_full_dev_and_answers_the_best(
    sampled_study, study_env, tmp_path, monkeypatch
):
    study, _ = sampled_study
    _no_test_splits(monkeypatch)
    larger = rerank_setup(study, None)
    assert larger.config.dev_per_split is None
    assert set(larger.evaluator.splits) == {f"{d}/dev" for d in DOMAINS}
    assert all(key.endswith("/dev") for key in larger.evaluator.splits)
    assert all(
        len(s) == len(load_split(s.domain, "dev")) > STUDY_SAMPLE
        for s in larger.evaluator.splits.values()
    )
    result = rerank(study, larger, 3)

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    expected_top = [t.number for t in sorted(complete, key=lambda t: (-t.value, t.number))[:3]]
    stored = study_attrs(study)[ATTR_RERANK]  # schema-checked
    assert [t["trial"] for t in stored["trials"]] == expected_top == list(result.scores)
    assert stored["k"] == 3 and stored["dev_per_split"] is None
    assert stored["study_dev_per_split"] == STUDY_SAMPLE
    by_number = {t.number: t for t in complete}
    for row in stored["trials"]:
        assert row["study_dev"] == by_number[row["trial"]].value
    # the re-scored values are the full-dev scores, computed here independently
    full = build_setup(
        load_config(write_study(tmp_path / "full.toml", study_env["world"], granularity='"model"'))
    )
    rescored = []
    for number in expected_top:
        full.engine.apply(full.coefficients(by_number[number].params))
        rescored.append(evaluate_dev(full).score)
    assert [row["rerank_dev"] for row in stored["trials"]] == pytest.approx(rescored)
    assert stored["answer"] == result.answer == expected_top[int(np.argmax(rescored))]
    assert f"### Re-ranked answer: #{result.answer}" in study_note(study)


def _fake_study(study_env, tmp_path, values: list[float]) -> optuna.Study:
    """A study with the tiny config stored and trials of these values (not run)."""
    config = load_config(write_study(tmp_path / "fake.toml", study_env["world"], dev_per_split="4"))
    study = optuna.create_study(direction="maximize", storage=study_env["storage"])
    study.set_user_attr(ATTR_CONFIG, json.loads(config.model_dump_json()))
    dist = optuna.distributions.FloatDistribution(0.0, 1.0)
    for i, v in enumerate(values):
        study.add_trial(
            optuna.trial.create_trial(
                params={"w.a.all": i / 10}, distributions={"w.a.all": dist}, value=v
            )
        )
    return study


def test_answer_is_the_argmax_of_the_rescored_ties_to_the_earlier_rank(
    study_env, tmp_path, monkeypatch
):
    study = _fake_study(study_env, tmp_path, [0.5, 0.9, 0.7, 0.9, 0.6, 0.8])
    # re-scored dev by trial number: 1 drops, 3 and 5 tie above it
    rescored = {1: 0.70, 3: 0.75, 5: 0.75}
    applied = []
    engine = SimpleNamespace(apply=applied.append)
    setup = SimpleNamespace(
        engine=engine,
        coefficients=lambda params: round(params["w.a.all"] * 10),
        apply=lambda params: applied.append(round(params["w.a.all"] * 10)),
        dev_keys=["vader-tweets/dev"],
        config=SimpleNamespace(dev_per_split=None, metric="accuracy", precision="fp32"),
        precision=SimpleNamespace(used="fp32"),
    )
    monkeypatch.setattr(
        "evolver_opt.search.objective.evaluate_dev",
        lambda s: SimpleNamespace(score=rescored.get(applied[-1], 0.1)),
    )
    assert [t.number for t in top_trials(study, 3)] == [1, 3, 5]  # ties by trial number
    result = rerank(study, setup, 3)
    assert applied == [1, 3, 5]
    assert result.scores == {1: (0.9, 0.70), 3: (0.9, 0.75), 5: (0.8, 0.75)}
    assert result.answer == 3
    assert study.user_attrs[ATTR_RERANK]["answer"] == 3
    assert len(rerank(study, setup, 50).scores) == 6  # k beyond the study: all its trials
    study.set_user_attr(ATTR_RERANK, {**study.user_attrs[ATTR_RERANK], "answer": 99})
    with pytest.raises(StateError, match="evolver_opt:rerank .*answer 99 is not one of"):
        study_attrs(study)


def test_bad_k_and_a_sample_not_larger_are_refused_naming_the_values(
    sampled_study, study_env, tmp_path
):
    study, _ = sampled_study
    with pytest.raises(ConfigError, match="top-k must be at least 1 .*got 0"):
        rerank(study, SimpleNamespace(), 0)
    with pytest.raises(ConfigError, match="got -2"):
        rerank(study, SimpleNamespace(), -2)
    for n in (STUDY_SAMPLE, STUDY_SAMPLE - 1):
        with pytest.raises(
            ConfigError,
            match=rf"dev_per_split = {n} is not larger than study 'sampled'.s own dev_per_split = {STUDY_SAMPLE}",
        ):
            rerank_setup(study, n)
    world = study_env["world"]
    full = optuna.create_study(study_name="full", storage=study_env["storage"])
    config = load_config(write_study(tmp_path / "f.toml", world))
    full.set_user_attr(ATTR_CONFIG, json.loads(config.model_dump_json()))
    with pytest.raises(ConfigError, match=r"already scores the full dev splits.*6 examples"):
        rerank_setup(full, 6)
    element = optuna.create_study(study_name="element", storage=study_env["storage"])
    config = load_config(write_study(tmp_path / "e.toml", world, granularity='"element"'))
    element.set_user_attr(ATTR_CONFIG, json.loads(config.model_dump_json()))
    with pytest.raises(ConfigError, match="granularity 'element'.*not coefficients"):
        rerank_setup(element, None)
    with pytest.raises(ConfigError, match="has no COMPLETE trial"):
        rerank(_fake_study(study_env, tmp_path, []), SimpleNamespace(), 2)


def test_cli_run_rerank_then_rerank_command(study_env, tmp_path, monkeypatch):
    _no_test_splits(monkeypatch)
    storage = study_env["storage"]
    study_file = write_study(
        tmp_path / "s.toml", study_env["world"], granularity='"model"', dev_per_split="4"
    )
    runner = CliRunner()
    args = ["--storage", storage, "--study-name", "tiny"]
    ran = runner.invoke(
        main, ["run", str(study_file), *args, "--n-trials", "6", "--rerank", "2", "--no-progress"]
    )
    assert ran.exit_code == 0, ran.output
    assert "re-ranking the top 2 trials of tiny on all of each dev split" in ran.output
    assert "answer: trial" in ran.output
    study = optuna.load_study(study_name="tiny", storage=storage)
    stored = study.user_attrs[ATTR_RERANK]
    assert stored["k"] == 2 and stored["dev_per_split"] is None
    assert [t["trial"] for t in stored["trials"]] == [t.number for t in top_trials(study, 2)]

    again = runner.invoke(main, ["rerank", *args, "--top-k", "3", "--dev-per-split", "6"])
    assert again.exit_code == 0, again.output
    stored = optuna.load_study(study_name="tiny", storage=storage).user_attrs[ATTR_RERANK]
    assert stored["k"] == 3 and stored["dev_per_split"] == 6 and len(stored["trials"]) == 3
    assert f"answer: trial {stored['answer']} (re-scored dev" in again.output
    assert "trial  study dev  re-scored dev" in again.output
    import optuna_dashboard

    note = optuna_dashboard.get_note(study)  # rewritten by the command, artifacts kept
    assert f"### Re-ranked answer: #{stored['answer']}" in note and "best_recipe.json" in note

    for bad, message in [
        (["--top-k", "0"], "got 0"),
        (["--dev-per-split", "4"], "dev_per_split = 4 is not larger"),
        (["--dev-per-split", "some"], "expected a number of examples >= 1 or 'all', got 'some'"),
    ]:
        refused = runner.invoke(main, ["rerank", *args, *bad])
        assert refused.exit_code != 0 and message in refused.output, refused.output
    missing = runner.invoke(main, ["rerank", "--storage", storage, "--study-name", "nope"])
    assert missing.exit_code != 0 and "no study named 'nope'" in missing.output


def test_cli_run_rerank_is_skipped_on_the_full_dev_set(study_env, tmp_path):
    study_file = write_study(tmp_path / "s.toml", study_env["world"], granularity='"model"')
    ran = invoke_run(study_file, study_env["storage"], "--n-trials", "4", "--rerank", "2")
    assert ran.exit_code == 0, ran.output
    assert "--rerank 2 skipped: the study already scores the full dev splits" in ran.output
    (summary,) = optuna.get_all_study_summaries(storage=study_env["storage"])
    assert ATTR_RERANK not in summary.user_attrs


def test_a_rerank_answer_is_marked_stale_once_newer_trials_enter_the_top_k(sampled_study):
    """Issue 27, item 7: after a resume, the note offered the old answer beside a new best
    that was never re-scored."""
    study, _ = sampled_study
    setup = rerank_setup(study, None)
    result = rerank(study, setup, 3)
    note = study_note(study)
    assert f"export it with `--trial {result.answer}`" in note and "stale" not in note
    best = study.best_trial
    study.add_trial(
        optuna.trial.create_trial(params=best.params, distributions=best.distributions, value=1.0)
    )  # a resumed run's new best, never re-scored
    newest = study.trials[-1].number
    note = study_note(study)
    assert f"### Re-ranked answer (stale): #{result.answer}" in note
    assert f"trial(s) #{newest} finished in the study's top 3" in note
    assert "evolver-opt rerank --study-name sampled --top-k 3" in note
    assert "export it with" not in note
    rerank(study, setup, 3)  # re-ranked again: current
    assert "stale" not in study_note(study)


def test_a_rerank_naming_a_trial_the_study_lacks_is_refused_naming_it(sampled_study):
    study, _ = sampled_study
    rerank(study, rerank_setup(study, None), 2)
    stored = dict(study.user_attrs[ATTR_RERANK])
    ghost = {"trial": 999, "study_dev": 0.5, "rerank_dev": 1.0}
    study.set_user_attr(ATTR_RERANK, {**stored, "trials": [*stored["trials"], ghost]})
    with pytest.raises(StateError, match=f"{ATTR_RERANK} names trial 999"):
        study_note(study)
