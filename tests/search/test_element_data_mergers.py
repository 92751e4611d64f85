"""``evolver-merger:fisher`` and ``evolver-merger:regmean``: each slot merges with the
statistics of the expert that seeded it (a static merge's slot: the mix of them)."""

from __future__ import annotations

import optuna
import pytest
import torch

from evolver_opt.errors import ConfigError
from evolver_opt.experiments.baselines import data_baseline
from evolver_opt.integrations.element_sampler import element_lineage
from evolver_opt.search.config import load_config
from evolver_opt.search.element import ElementObjective, parse_element_sampler
from evolver_opt.search.merge_stats import SlotStats
from evolver_opt.search.objective import build_setup, evaluate_dev
from evolver_opt.search.runner import open_study, run_study
from tests.tiny_world import write_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

KINDS = ("fisher", "regmean")


def _study(world, tmp_path, storage, kind, name, **overrides):
    config = load_config(write_study(tmp_path / "s.toml", world, heads='"separate"', **overrides))
    setup = build_setup(config)
    sampler = f"evolver-merger:{kind}"
    study = open_study(config, setup.initial_points(), sampler=sampler, seed=0,
                       storage=storage, study_name=name)  # fmt: skip
    return setup, study, ElementObjective(setup, parse_element_sampler(sampler))


def test_slot_statistics_are_the_seeding_experts_and_their_mix():
    stored = [torch.full((3,), 1.0), torch.full((3,), 3.0), torch.full((3,), 8.0)]
    one_hot = [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    third = [[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]
    slots = SlotStats(stored, [one_hot, third, [[0.5, 0.5]] * 3, [[1.0, 0.0]] * 3])
    assert slots[0] is stored[0] and slots[1] is stored[2]  # an expert's own, not a copy
    assert torch.equal(slots[2], torch.full((3,), 4.0))  # the average: the mean of all three
    assert slots[3] is slots[3] and torch.equal(slots[3], torch.full((3,), 4.0))
    grams = [{"a": torch.eye(2), "b": torch.ones(1, 1)}, {"a": 3 * torch.eye(2)}]
    mixed = SlotStats(grams, [[[0.25], [0.75]]])[0]
    assert torch.equal(mixed["a"], 2.5 * torch.eye(2))
    assert torch.equal(mixed["b"], 0.25 * torch.ones(1, 1))  # a layer only one expert has
    with pytest.raises(ConfigError, match="no positive model weight"):
        SlotStats(stored, [[[0.0], [0.0], [0.0]]])


@pytest.mark.parametrize("kind", KINDS)
def test_the_population_of_experts_merges_to_the_static_method(kind, world, tmp_path, study_env):
    """With the experts alone as the population, the population trial's merge is the static
    Fisher/RegMean merge of the experts (the same cached statistics, slot i = expert i)."""
    setup, study, objective = _study(
        world, tmp_path, study_env["storage"], kind, f"experts-{kind}", seed_merges="[]"
    )
    run_study(study, objective, n_trials=len(setup.engine.model_names) + 1)
    population_trial = study.trials[-1]
    assert element_lineage(population_trial).role == "population"
    merged = setup.engine.output.clone()
    with setup.engine.model_precision(torch.float32):
        static = data_baseline(setup, kind, echo=lambda _: None)
    torch.testing.assert_close(setup.engine.output, merged, rtol=1e-5, atol=1e-6)
    assert population_trial.value == pytest.approx(static.dev, abs=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_offspring_race_the_merged_population_and_the_answer_is_its_merge(
    kind, world, tmp_path, study_env
):
    setup, study, objective = _study(world, tmp_path, study_env["storage"], kind, f"run-{kind}")
    run_study(study, objective, n_trials=12)
    roles = [element_lineage(t).role for t in study.trials]
    assert roles[:5] == ["init"] * 4 + ["population"] and set(roles[5:]) <= {"offspring"}
    pop, _ = objective.sync(study)
    assert pop.score is not None
    with setup.engine.model_precision(torch.float32):
        answer = objective.apply_answer(study)
        assert answer == pop.score == evaluate_dev(setup).score


def test_compare_reports_evolver_plus_and_the_data_mergers(world, tmp_path, study_env):
    import json

    from click.testing import CliRunner

    from evolver_opt.cli import main

    study_file = write_study(tmp_path / "s.toml", world, heads='"separate"')
    out = tmp_path / "report"
    samplers = "evolver-plus,evolver-merger:regmean"
    result = CliRunner().invoke(
        main,
        ["compare", str(study_file), "--samplers", samplers, "--seeds", "1", "--n-trials", "7",
         "--storage", study_env["storage"], "--out", str(out), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())["rows"]
    by_name = {r["name"]: r for r in rows if r["kind"] == "sampler"}
    assert set(by_name) == set(samplers.split(","))
    assert all(r["trials"] == 7 and r["test"] for r in by_name.values())
    study = optuna.load_study(study_name=by_name["evolver-plus"]["study_name"],
                              storage=study_env["storage"])  # fmt: skip
    stored = study.user_attrs["evolver_opt:sampler"]["options"]
    assert stored["mutation"] == "pbest" and stored["adapt"] == "jde"  # the preset, on record
    report = (out / "report.md").read_text()
    assert "| evolver-merger:regmean | 1 |" in report and "| evolver-plus | 1 |" in report
