"""Weight-space Evolver studies on tiny models: replay, greedy selection, resume, the merger.

Most tests score a model by its distance to a fixed weight vector (``_weight_fitness``): no
forward passes, and every offspring gets a different score, so selection really happens and a
replayed individual must reproduce its stored score bit for bit.
"""

from __future__ import annotations

import hashlib
import json

import optuna
import pytest
import torch
from click.testing import CliRunner

from evolver_opt import ConfigError
from evolver_opt.cli import main
from evolver_opt.integrations.element_sampler import element_lineage, element_population
from evolver_opt.merge import get_method
from evolver_opt.search import objective as objective_module
from evolver_opt.search.config import load_config
from evolver_opt.search.element import (
    ElementObjective,
    parse_element_sampler,
    resolve_sampler,
)
from evolver_opt.search.objective import build_setup, evaluate_dev
from evolver_opt.search.runner import open_study, run_study
from tests.tiny_world import write_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


class _Score:
    """What ``evaluate_dev`` returns, for a score computed from the weights alone."""

    def __init__(self, score: float) -> None:
        self.score, self.n_seen, self.stopped_early, self.per_split = score, 0, False, {}
        self.logprob = None


def _weight_fitness(setup):
    e = setup.engine
    target = (
        e.stacked[0] + 0.7 * (e.stacked[1] - e.stacked[0]) + 0.5 * (e.stacked[2] - e.stacked[0])
    )

    def score(_setup=None, stop_below=None, **_stages) -> _Score:
        return _Score(-float(((e.output - target) ** 2).sum()))

    return score


@pytest.fixture
def element_env(study_env, tmp_path, monkeypatch):
    config = load_config(
        write_study(tmp_path / "s.toml", study_env["world"], granularity='"element"')
    )
    setup = build_setup(config)
    fitness = _weight_fitness(setup)
    monkeypatch.setattr(objective_module, "evaluate_dev", fitness)  # score_on_dev calls it
    return {
        **study_env,
        "config": config,
        "setup": setup,
        "fitness": fitness,
        "toml": tmp_path / "s.toml",
    }


def _run(env, sampler, name, n_trials, objective=None):
    study = open_study(env["config"], env["setup"].initial_points(), sampler=sampler, seed=0,
                       storage=env["storage"], study_name=name)  # fmt: skip
    objective = objective or ElementObjective(env["setup"], parse_element_sampler(sampler))
    run_study(study, objective, n_trials=n_trials)
    return study, objective


def _digest(rows: torch.Tensor) -> str:
    return hashlib.sha256(rows.contiguous().numpy().tobytes()).hexdigest()


def test_plain_replay_is_greedy_deterministic_and_resumable(element_env):
    env, setup, fitness = element_env, element_env["setup"], element_env["fitness"]
    study, objective = _run(env, "evolver-element", "whole", 16)
    pop, weights = objective.sync(study)
    trials = study.trials
    assert len(pop.accepted) >= 2, "the weight fitness must let some offspring win"
    for acc in pop.accepted:  # greedy: an accepted offspring beat the parent it came from
        assert trials[acc.trial].value > trials[acc.parent_trial].value
    for t in trials[4:]:  # offspring store lineage, never parameters
        lineage = element_lineage(t)
        assert t.params == {} and lineage.role == "offspring" and lineage.CR == 0.5
        assert {"slot", "reference", "F", "CR", "mask_seed"} <= set(lineage.to_attr())
    # Each individual's replayed weights reproduce the score stored for them, bit for bit.
    for slot, value in enumerate(pop.values):
        setup.engine.output.copy_(weights.row(slot))
        assert fitness().score == value
    # Memory: the population's rows and nothing else with one worker.
    assert weights.extras == {} and weights.nbytes() == weights.rows.numel() * 4
    assert weights.rows.shape[0] == pop.size + 1
    # A fresh objective (as in a new process) catches up to the same bytes.
    _, fresh = ElementObjective(setup, objective.mode).sync(study)
    assert torch.equal(fresh.rows, weights.rows)
    # Interrupted after 7 trials and resumed by a new objective: the same study.
    _run(env, "evolver-element", "halves", 7)
    resumed, _ = _run(env, "evolver-element", "halves", 16)
    assert [(t.state, t.value, t.system_attrs["evolver:element"]) for t in resumed.trials] == [
        (t.state, t.value, t.system_attrs["evolver:element"]) for t in trials
    ]
    # The answer is the best individual by dev score.
    assert objective.apply_answer(study) == max(v for v in pop.values if v is not None)
    assert fitness().score == study.user_attrs["evolver_opt:element_answer"]["dev"]
    # A new engine loaded from the checkpoints and a new study object (all that a new process
    # has) rebuild the same population bytes from the storage alone.
    other = build_setup(load_config(env["toml"]))
    loaded = optuna.load_study(study_name="whole", storage=env["storage"])
    _, rebuilt = ElementObjective(other, objective.mode).sync(loaded)
    assert rebuilt.rows.data_ptr() != weights.rows.data_ptr()
    assert _digest(rebuilt.rows) == _digest(weights.rows)


def test_merger_fitness_is_the_merged_population_score(element_env):
    env, setup, fitness = element_env, element_env["setup"], element_env["fitness"]
    study, objective = _run(env, "evolver-merger:average", "merger", 14)
    roles = [element_lineage(t).role for t in study.trials]
    assert roles[:5] == ["init"] * 4 + ["population"] and set(roles[5:]) == {"offspring"}
    pop, weights = objective.sync(study)
    assert pop.accepted, "some offspring must improve the merged population"
    # The merge of the final population (a plain mean of the individuals' rows) scores what
    # the trial that made it stored.
    weights.merge(get_method("average"))
    assert torch.allclose(setup.engine.output, weights.rows[1:].mean(dim=0), atol=1e-6)
    assert fitness().score == pytest.approx(pop.score, rel=1e-6)
    assert study.trials[pop.score_trial].value == pop.score
    # The answer is that merge, not the best single trial (an expert may score higher alone).
    assert objective.apply_answer(study) == pop.score


def test_merger_fitness_is_the_dev_score_of_the_merged_model(study_env, tmp_path):
    config = load_config(write_study(tmp_path / "s.toml", study_env["world"]))
    setup = build_setup(config)
    study = open_study(config, setup.initial_points(), sampler="evolver-merger:ties", seed=0,
                       storage=study_env["storage"])  # fmt: skip
    objective = ElementObjective(setup, parse_element_sampler("evolver-merger:ties"))
    run_study(study, objective, n_trials=6)
    population_trial = study.trials[4]
    assert element_lineage(population_trial).role == "population"
    pop, weights = objective.sync(study)
    weights.merge(get_method("ties"))
    assert evaluate_dev(setup).score == pop.score
    assert {k for k in population_trial.user_attrs if k.startswith("dev:")} == {
        f"dev:{d}/dev" for d in config.dev
    }


def test_compare_reports_both_modes_with_peak_memory(study_env, tmp_path):
    study_file = write_study(tmp_path / "s.toml", study_env["world"], granularity='"model"')
    out = tmp_path / "report"
    result = CliRunner().invoke(
        main,
        ["compare", str(study_file), "--samplers", "evolver-element,evolver-merger:average",
         "--seeds", "1", "--n-trials", "6", "--storage", study_env["storage"], "--out", str(out),
         "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())["rows"]
    samplers = {r["name"]: r for r in rows if r["kind"] == "sampler"}
    assert set(samplers) == {"evolver-element", "evolver-merger:average"}
    for r in samplers.values():
        assert r["trials"] == 6 and len(r["curve"]) == 6 and r["peak_rss_mb"] > 0
        assert set(r["test"]) == {"vader-tweets", "vader-movies", "vader-amazon", "uci-imdb"}
    for name in ("evolver-element", "evolver-merger:average"):
        study = optuna.load_study(
            study_name=samplers[name]["study_name"], storage=study_env["storage"]
        )
        answer = study.user_attrs["evolver_opt:element_answer"]
        assert samplers[name]["best_dev"] == answer["dev"] == samplers[name]["curve"][-1]
        assert study.user_attrs["peak_rss_mb"]["mib"] == samplers[name]["peak_rss_mb"]
    population = element_population(
        optuna.load_study(study_name=samplers["evolver-element"]["study_name"],
                          storage=study_env["storage"])
    )  # fmt: skip
    assert samplers["evolver-element"]["best_dev"] == max(v for v in population.values if v)
    report = (out / "report.md").read_text()
    assert "peak RSS MiB" in report and "| evolver-merger:average | 1 |" in report


def test_sampler_names_and_granularity_element_fail_clearly():
    assert parse_element_sampler("evolver-element").mode == "plain"
    assert parse_element_sampler("evolver-merger:dare").method == "dare"
    assert parse_element_sampler("cmaes") is None
    with pytest.raises(ConfigError, match=r"merger must be one of \['average'"):
        parse_element_sampler("evolver-merger:slerp")
    assert parse_element_sampler("evolver-merger:regmean").method == "regmean"
    assert resolve_sampler("element", "evolver") == "evolver-element"
    assert resolve_sampler("layer", "cmaes") == "cmaes"
    with pytest.raises(ConfigError, match="granularity 'element' evolves weights"):
        resolve_sampler("element", "cmaes")
