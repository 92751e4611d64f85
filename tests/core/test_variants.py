"""Evolver beyond the paper: current-to-pbest/1 with an archive, restarts, perturbed starts."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from evolver_opt import EvolverSampler
from evolver_opt.core.config import KICK_SIGMA, EvolverConfig
from evolver_opt.core.evolver import Evolver
from evolver_opt.core.operators import initial_point, make_offspring, spread
from evolver_opt.core.population import Lineage, Record, replaced_parents
from evolver_opt.errors import ConfigError
from evolver_opt.search.config import EvolverSettings
from evolver_opt.search.samplers import EVOLVER_PLUS, make_sampler
from tests.core._helpers import assert_twins_agree, enqueued_study, run_sphere, sphere

optuna.logging.set_verbosity(optuna.logging.ERROR)
PBEST = EvolverConfig(mutation="pbest")
DIM = 5
LOWER, UPPER = np.zeros(DIM), np.ones(DIM)


def _population(seed: int = 0, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs = rng.random((size, 5))
    return xs, np.sum((xs - 0.3) ** 2, axis=1)


def test_pbest_is_jades_formula_from_the_best_share_and_the_archive():
    xs, values = _population()
    archive = np.random.default_rng(9).random((4, 5)) + 5.0  # far away: easy to tell apart
    top = set(np.argsort(values)[: max(2, math.ceil(0.2 * 8))].tolist())
    seen_archive = 0
    for k in range(300):
        child = make_offspring(k, k % 8, xs, values, LOWER - 20, UPPER + 20, 3, PBEST,
                               archive=archive)  # fmt: skip
        pbest, r1, r2 = child.references
        assert child.reference_kind == "pbest" and pbest in top
        assert r1 != child.target and r2 not in (child.target, r1)
        x2 = archive[r2 - 8] if r2 >= 8 else xs[r2]
        seen_archive += r2 >= 8
        x = xs[child.target]
        mutant = x + 0.5 * (xs[pbest] - x) + 0.5 * (xs[r1] - x2)
        taken = child.x != x
        np.testing.assert_allclose(child.x[taken], mutant[taken])
        assert taken.any()
    assert 0 < seen_archive < 300  # r2 comes from population and archive
    again = make_offspring(7, 1, xs, values, LOWER, UPPER, 3, PBEST, archive=archive)
    np.testing.assert_array_equal(
        again.x, make_offspring(7, 1, xs, values, LOWER, UPPER, 3, PBEST, archive=archive).x
    )


@pytest.mark.parametrize("how", ["clip", "reflect"])
def test_every_variant_stays_in_bounds(how):
    xs, values = _population(1)
    lower, upper = np.full(5, -0.5), np.full(5, 1.5)
    for config in (
        EvolverConfig(mutation="pbest", F=1.0, bound_handling=how),
        EvolverConfig(mutation="pbest", adapt="jde", bound_handling=how, restart=0.99),
    ):
        for k in range(200):
            x = make_offspring(k, k % 8, xs * 4 - 2, values, lower, upper, 0, config).x
            assert np.all(x >= lower) and np.all(x <= upper)


def test_a_collapsed_population_restarts_with_a_kick_of_the_best():
    xs = np.tile(np.linspace(0.2, 0.6, 5), (6, 1)) + 1e-6 * np.arange(6)[:, None]
    values = np.arange(6, dtype=float)[::-1]  # slot 5 is the best
    config = EvolverConfig(mutation="pbest", restart=0.01)
    assert spread(xs, LOWER, UPPER) < 0.01
    kicks = [make_offspring(k, 0, xs, values, LOWER, UPPER, 0, config) for k in range(200)]
    assert all(c.reference_kind == "restart" and c.references == (5,) for c in kicks)
    steps = np.array([c.x - xs[5] for c in kicks])
    assert np.std(steps) == pytest.approx(KICK_SIGMA, rel=0.15)
    spread_out = np.random.default_rng(0).random((6, 5))
    assert (
        make_offspring(0, 0, spread_out, values, LOWER, UPPER, 0, config).reference_kind == "pbest"
    )


def test_perturbed_starts_are_seeded_copies_of_the_given_points():
    starts = np.array([[0.0, 1.0, 0.5, 0.5, 0.5], [1.0, 0.0, 0.5, 0.5, 0.5]])
    config = EvolverConfig(init="perturbed", bound_handling="reflect")
    points = [initial_point(4, i, starts, LOWER, UPPER, config) for i in range(2, 200)]
    assert all(np.all(p >= 0) and np.all(p <= 1) for p in points)
    near = [np.abs(p - starts[i % 2]).max() for i, p in enumerate(points, start=2)]
    assert np.median(near) < 4 * KICK_SIGMA
    np.testing.assert_array_equal(points[0], initial_point(4, 2, starts, LOWER, UPPER, config))
    random = initial_point(4, 2, starts, LOWER, UPPER, EvolverConfig())
    assert not np.allclose(random, points[0])


def test_core_archive_keeps_the_last_replaced_parents_and_resumes_exactly():
    opt = Evolver(LOWER, UPPER, initial_points=np.eye(5)[:4], seed=2, config=PBEST)
    replaced = []
    for _ in range(80):
        c = opt.ask()
        before = opt.population[0][c.target].tolist()
        if opt.tell(c.index, sphere(c.x)) and c.role == "offspring":
            replaced.append(before)
    state = opt.state_dict()
    assert len(replaced) > 4 and state["archive"] == replaced[-4:]
    assert_twins_agree(opt, Evolver.from_state_dict(state), 40)


def test_archive_from_records_is_the_replaced_holders_in_trial_order():
    def rec(number, slot, value):
        lineage = Lineage(index=number, role="offspring", slot=slot, trial=number,
                          parent_trial=0)  # fmt: skip
        return Record(number, True, value, lineage if number >= 2 else None, number < 2)

    records = [rec(0, 0, 5.0), rec(1, 1, 4.0), rec(2, 0, 3.0), rec(3, 0, 3.5), rec(4, 1, 1.0),
               rec(5, 0, 2.0)]  # fmt: skip
    out = replaced_parents(records[::-1], [0, 1], 2, limit=5)  # the order given never matters
    assert [r.number for r in out] == [0, 1, 2]
    assert [r.number for r in replaced_parents(records, [0, 1], 2, limit=2)] == [1, 2]
    assert [r.number for r in replaced_parents(records, [0, 1], 2, limit=1)] == [2]
    assert replaced_parents(records, [0, 1], 2, limit=0) == []


def test_archive_skips_records_outside_the_population_and_keeps_scanning():
    def rec(number, slot, value):
        lineage = Lineage(index=number, role="offspring", slot=slot, trial=number,
                          parent_trial=0)  # fmt: skip
        return Record(number, True, value, lineage if number >= 2 else None, number < 2)

    # trial 2 names a slot past the population, trial 3 has no value: both are skipped, and
    # the later records still replace holders (a skip is not the end of the scan)
    records = [rec(0, 0, 5.0), rec(1, 1, 4.0), rec(2, 2, 0.1), rec(3, 0, None), rec(4, 0, 1.0),
               rec(5, 1, 0.5)]  # fmt: skip
    assert [r.number for r in replaced_parents(records, [0, 1], 2, limit=5)] == [0, 1]


def test_spread_is_the_mean_std_relative_to_the_bounds():
    xs = np.array([[0.0, 1.0, 3.0], [0.2, 1.0, 3.0]])  # std 0.1, 0, 0 per coordinate
    lower, upper = np.array([0.0, 0.0, 3.0]), np.array([2.0, 4.0, 3.0])  # widths 2, 4, 0
    assert spread(xs, lower, upper) == pytest.approx((0.1 / 2 + 0.0 + 0.0) / 3)
    # a coordinate of zero width is measured against 1 (unbounded ones too)
    xs[:, 2] = [2.0, 4.0]
    assert spread(xs, lower, upper) == pytest.approx((0.1 / 2 + 0.0 + 1.0 / 1.0) / 3)
    assert spread(np.empty((0, 3)), lower, upper) == 0.0


def test_pbest_draws_from_the_best_scored_and_copes_with_no_score():
    from evolver_opt.core.operators import _pbest

    xs = np.arange(24, dtype=float).reshape(8, 3)
    values = np.array([5.0, 1.0, np.nan, 0.5, 9.0, 1.0, np.inf, 7.0])
    seen = set()
    for seed in range(200):  # top max(2, ceil(0.2 * 8)) = 2 of the finite values: 3, then 1
        _, (pbest, r1, r2) = _pbest(0, xs, values, np.random.default_rng(seed), 0.2, 0.5, None)
        seen.add(pbest)
        assert r1 != 0 and r2 not in (0, r1)
    assert seen == {1, 3}
    ties = np.full(8, 2.0)  # equal values: the stable order keeps the lowest indices first
    unscored = np.full(8, np.nan)  # nothing scored yet: every individual is a candidate
    for vals in (ties, unscored):
        picks = {_pbest(0, xs, vals, np.random.default_rng(s), 0.2, 0.5, None)[1][0]
                 for s in range(200)}  # fmt: skip
        assert picks == {0, 1}


def _study(sampler: EvolverSampler) -> optuna.Study:
    """The sphere study over five parameters."""
    return enqueued_study(sampler, DIM)


def _run(study: optuna.Study, n: int) -> None:
    """``n`` more trials of the five-parameter sphere."""
    run_sphere(study, n, DIM)


def test_the_sampler_makes_the_core_classes_offspring_and_resumes_exactly():
    """One worker: evolver-plus over Optuna (archive and rates rebuilt from the trials each
    ask) proposes what the core optimizer with its in-memory archive proposes."""
    config = EvolverConfig(**EVOLVER_PLUS)
    study = _study(make_sampler("evolver-plus", seed=5))
    _run(study, 60)
    core = Evolver(LOWER, UPPER, initial_points=[[float(i == j % 4) for j in range(5)]
                                                 for i in range(4)], seed=5, config=config)  # fmt: skip
    for t in study.trials:
        c = core.ask()
        np.testing.assert_allclose(c.x, [t.params[f"x{j}"] for j in range(5)], atol=1e-12)
        core.tell(c.index, t.value)
    assert core.state_dict()["archive"], "some offspring must have replaced a parent"
    resumed = _study(make_sampler("evolver-plus", seed=5))
    _run(resumed, 25)
    resumed.sampler = make_sampler("evolver-plus", seed=5)  # a new process
    _run(resumed, 35)
    assert [t.params for t in resumed.trials] == [t.params for t in study.trials]


def test_settings_keep_old_identities_and_refuse_bad_values():
    assert set(EvolverSettings().stored()) == set(EvolverSettings(p_best=0.2).stored())
    assert EvolverSettings(mutation="pbest", restart=0.01).stored()["restart"] == 0.01
    for bad in ({"p_best": 0.0}, {"restart": 1.0}, {"init": "sobol"}):
        with pytest.raises(ConfigError):
            EvolverConfig(**bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            EvolverSettings(**bad)
