"""``evolver-merger:METHOD`` with a separable method: each trial merges one slot's part into a
kept sum (``WeightPopulation.merge_offspring``), and that equals merging every row."""

from __future__ import annotations

import optuna
import pytest
import torch

from evolver_opt.integrations.element_sampler import element_lineage
from evolver_opt.merge.weight_population import IncrementalMerge, WeightPopulation
from evolver_opt.search.config import load_config
from evolver_opt.search.element import ElementObjective, parse_element_sampler
from evolver_opt.search.objective import build_setup
from evolver_opt.search.runner import open_study, run_study
from tests.tiny_world import write_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

N_TRIALS = 16
# seeds whose 16 trials accept offspring on the tiny world (Fisher's accepts none there)
SEEDS = {"regmean": 1, "task_arithmetic": 0, "fisher": 0}


def _run(world, tmp_path, storage, method, name, *, full=False, n_trials=N_TRIALS, seed=3):
    study_file = write_study(tmp_path / f"{name}.toml", world, heads='"separate"')
    setup = build_setup(load_config(study_file))
    sampler = f"evolver-merger:{method}"
    study = open_study(setup.config, setup.initial_points(), sampler=sampler, seed=seed,
                       storage=storage, study_name=name)  # fmt: skip
    objective = ElementObjective(setup, parse_element_sampler(sampler))
    if full:
        objective.method.separable = False  # today's path: merge every row, every trial
    run_study(study, objective, n_trials=n_trials)
    return setup, study, objective


def _full_merge(weights, method, slot, offspring, params):
    """Every row merged with the offspring swapped in (the non-incremental path)."""
    kept = offspring.clone()
    with weights.substituted(slot, kept):
        method.merge(weights._population_engine(), **params)
    return weights.engine.output.clone()


@pytest.mark.parametrize("adopt", [True, False], ids=["adopt", "replace"])
@pytest.mark.parametrize("method", ["regmean", "fisher", "task_arithmetic"])
def test_every_trials_merge_equals_the_full_merge(method, adopt, world, tmp_path, study_env,
                                                  monkeypatch):  # fmt: skip
    """Per trial, the incremental merge is the merge of every row; accepted offspring move the
    sum either by adopting the trial's own result or (``replace``) by one slot's part."""
    monkeypatch.setenv("EVOLVER_OPT_PRECISION", "fp32")  # compare merges, not roundings
    checked: list[int | None] = []
    original = WeightPopulation.merge_offspring

    def checking(self, method_, slot, offspring, trial=None, **params):
        full = _full_merge(self, method_, slot, offspring, params)
        original(self, method_, slot, offspring, trial, **params)
        torch.testing.assert_close(self.engine.output, full, rtol=1e-5, atol=1e-6)
        checked.append(trial)

    monkeypatch.setattr(WeightPopulation, "merge_offspring", checking)
    if not adopt:
        monkeypatch.setattr(IncrementalMerge, "adopt", lambda self, slot, trial: False)
    setup, study, objective = _run(
        world, tmp_path, study_env["storage"], method, f"i-{method}", seed=SEEDS[method]
    )
    population, weights = objective.sync(study)
    assert len(checked) >= 8  # offspring merged
    assert len(population.accepted) >= (method != "fisher")  # and some accepted
    assert weights._incremental is not None  # the kept sum, not a rebuild
    cache = weights._incremental
    with setup.engine.model_precision(torch.float32):
        objective.apply_answer(study)
        incremental = setup.engine.output.clone()
        assert weights._incremental is cache
        objective.method.separable = False
        objective.apply_answer(study)
        torch.testing.assert_close(incremental, setup.engine.output, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_regmean_study_stores_the_same_trials_both_ways(precision, world, tmp_path, study_env,
                                                          monkeypatch):  # fmt: skip
    """The same seed, incremental vs every row merged: the same lineage, states and values
    (merger trials are scored in the study's precision, bfloat16 included)."""
    monkeypatch.setenv("EVOLVER_OPT_PRECISION", precision)
    storage = study_env["storage"]
    seed = SEEDS["regmean"]
    _, fast, objective = _run(world, tmp_path, storage, "regmean", "both-fast", seed=seed)
    _, full, _ = _run(world, tmp_path, storage, "regmean", "both-full", full=True, seed=seed)
    assert objective.sync(fast)[0].accepted
    assert objective.setup.precision.used == precision
    assert len(fast.trials) == len(full.trials) == N_TRIALS
    for a, b in zip(fast.trials, full.trials):
        assert element_lineage(a) == element_lineage(b)
        assert a.state == b.state
        assert a.value == pytest.approx(b.value, abs=1e-6) if a.value is not None else True
        if "dev_logprob" in b.user_attrs:
            assert a.user_attrs["dev_logprob"] == pytest.approx(b.user_attrs["dev_logprob"],
                                                                abs=1e-5)  # fmt: skip
    assert any(element_lineage(t).role == "offspring" for t in fast.trials)
