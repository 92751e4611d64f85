"""Behaviour of the numpy Evolver core: mutation, crossover, selection, bounds, state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evolver_opt.core.config import EvolverConfig
from evolver_opt.core.evolver import Evolver
from evolver_opt.core.operators import choose_target, into_bounds, make_offspring
from evolver_opt.errors import ConfigError, StateError
from tests.core._helpers import assert_twins_agree, sphere

LOWER, UPPER = np.zeros(6), np.ones(6)


def _population(seed: int = 0, size: int = 5, dim: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((size, dim)), rng.random(size)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"F": 0.0}, "F=0.0"),
        ({"F": 1.5}, "F=1.5"),
        ({"CR": 1.2}, "CR=1.2"),
        ({"mutation": "gauss"}, "mutation='gauss'"),
        ({"bound_handling": "wrap"}, "bound_handling='wrap'"),
        ({"p_random": None}, "n_generations"),
    ],
)
def test_config_errors_name_the_value(kwargs, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        EvolverConfig(**kwargs)


def test_interpolation_offspring_mixes_target_and_mutant():
    xs, values = _population()
    config = EvolverConfig(F=0.3, CR=0.5)
    for k in range(50):
        child = make_offspring(k, 1, xs, values, LOWER, UPPER, seed=7, config=config)
        (r,) = child.references
        assert r != 1
        mutant = 0.7 * xs[1] + 0.3 * xs[r]
        from_mutant = np.isclose(child.x, mutant)
        from_target = np.isclose(child.x, xs[1])
        assert np.all(from_mutant | from_target)
        assert from_mutant.sum() >= 1  # at least one coordinate comes from the mutant


@pytest.mark.parametrize(("cr", "expected"), [(1.0, 6), (0.0, 1)])
def test_crossover_rate_extremes(cr, expected):
    xs, values = _population()
    child = make_offspring(3, 0, xs, values, LOWER, UPPER, seed=1, config=EvolverConfig(CR=cr))
    assert child.n_from_mutant == expected


def test_reference_is_best_other_when_p_random_is_zero():
    xs, values = _population()
    values = np.array([0.5, 0.1, 0.9, 0.3, 0.7])
    for k in range(20):
        child = make_offspring(
            k, 1, xs, values, LOWER, UPPER, seed=k, config=EvolverConfig(p_random=0.0)
        )
        assert child.references == (3,)  # best other than the target itself (slot 1)
        assert child.reference_kind == "best"


def test_random_reference_covers_all_others():
    xs, values = _population()
    refs = {
        make_offspring(
            k, 2, xs, values, LOWER, UPPER, seed=0, config=EvolverConfig(p_random=1.0)
        ).references[0]
        for k in range(200)
    }
    assert refs == {0, 1, 3, 4}


def test_de_mutation_formula():
    xs, values = _population(size=6)
    config = EvolverConfig(mutation="de", F=0.8, CR=1.0, bound_handling="clip")
    child = make_offspring(4, 0, xs, values, LOWER, UPPER, seed=3, config=config)
    r1, r2, r3 = child.references
    assert len({0, r1, r2, r3}) == 4
    np.testing.assert_allclose(child.x, np.clip(xs[r1] + 0.8 * (xs[r2] - xs[r3]), 0, 1))


def test_de_needs_four_individuals():
    xs, values = _population(size=3)
    with pytest.raises(ConfigError, match="at least 4"):
        make_offspring(0, 0, xs, values, LOWER, UPPER, seed=0, config=EvolverConfig(mutation="de"))


def test_schedule_of_released_code():
    config = EvolverConfig(p_random=None, n_generations=10)
    assert config.p_random_at(0) == pytest.approx(0.55)
    assert config.p_random_at(9) == pytest.approx(1.0)
    assert config.p_random_at(12) == 1.0


def test_bounds_clip_and_reflect():
    x = np.array([-0.2, 0.5, 1.3, 2.5])
    lo, hi = np.zeros(4), np.ones(4)
    np.testing.assert_allclose(into_bounds(x, lo, hi, "clip"), [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(into_bounds(x, lo, hi, "reflect"), [0.2, 0.5, 0.7, 0.5])


def test_each_generation_targets_every_individual_once():
    for generation in range(3):
        targets = [choose_target(5, generation * 7 + j, 7) for j in range(7)]
        assert sorted(targets) == list(range(7))


def test_busy_targets_are_skipped_while_free_ones_exist():
    target = choose_target(0, 0, 4)
    assert choose_target(0, 0, 4, busy=[target]) != target
    assert choose_target(0, 0, 4, busy=[0, 1, 2, 3]) == target


def test_same_seed_same_run_different_seed_different_run():
    def run(seed):
        opt = Evolver(LOWER, UPPER, initial_points=np.eye(6)[:4], seed=seed)
        out = []
        for _ in range(30):
            c = opt.ask()
            out.append(c.x)
            opt.tell(c.index, float(np.sum(c.x**2)))
        return np.array(out)

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.allclose(run(3), run(4))


def test_greedy_selection_and_lost_offspring():
    opt = Evolver(np.zeros(2), np.ones(2), initial_points=[[0, 0], [1, 1], [0, 1]], seed=0)
    for _ in range(3):
        c = opt.ask()
        opt.tell(c.index, float(c.index + 1))  # values 1, 2, 3
    child = opt.ask()
    _before_x, before_values = opt.population
    assert opt.tell(child.index, before_values[child.target] + 1.0) is False  # worse: kept
    child = opt.ask()
    kept = opt.population[0][child.target].copy()
    assert opt.tell(child.index, before_values[child.target]) is False  # a tie: kept (Eq. 4)
    np.testing.assert_array_equal(opt.population[0][child.target], kept)
    child = opt.ask()
    assert opt.tell(child.index, float("nan")) is False  # NaN: lost
    assert opt.population[1] == before_values
    child = opt.ask()
    assert opt.tell(child.index, -5.0) is True
    xs, values = opt.population
    assert values[child.target] == -5.0
    np.testing.assert_array_equal(xs[child.target], child.x)
    assert opt.best_value == -5.0


def test_several_in_flight_target_different_individuals():
    opt = Evolver(LOWER, UPPER, initial_points=np.eye(6)[:4], seed=0)
    for _ in range(4):
        c = opt.ask()
        opt.tell(c.index, 1.0)
    in_flight = [opt.ask() for _ in range(4)]
    assert sorted(c.target for c in in_flight) == [0, 1, 2, 3]
    for c in reversed(in_flight):  # tells in any order
        opt.tell(c.index, 0.5)
    assert opt.population[1] == [0.5] * 4


def test_ask_is_the_pure_functions_of_its_state():
    """Each offspring of the ask/tell class is ``make_offspring`` of the k-th index, the target
    ``choose_target`` gives with the pending ones busy, and the values told so far."""
    size, seed = 4, 3
    config = EvolverConfig(p_random=0.0)  # always the best other: the values matter
    opt = Evolver(LOWER, UPPER, initial_points=np.eye(6)[:size], seed=seed, config=config)
    rng = np.random.default_rng(0)
    for _ in range(size):
        c = opt.ask()
        opt.tell(c.index, float(rng.random()))
    pending = []
    for k in range(10):  # two in flight at a time, across generations
        xs, values = opt.population
        busy = [c.target for c in pending]
        expected = make_offspring(
            k,
            choose_target(seed, k, size, busy),
            xs,
            np.array(values, dtype=float),
            LOWER,
            UPPER,
            seed,
            config,
        )
        c = opt.ask()
        assert (c.role, c.target, c.references) == (
            "offspring",
            expected.target,
            expected.references,
        )
        np.testing.assert_array_equal(c.x, expected.x)
        pending.append(c)
        if len(pending) == 2:
            done = pending.pop(0)
            opt.tell(done.index, float(rng.random()))


def test_tell_unknown_index_raises():
    opt = Evolver(LOWER, UPPER, seed=0)
    with pytest.raises(StateError, match="was not asked"):
        opt.tell(3, 1.0)


def test_state_round_trips_through_json_and_continues_identically():
    a = Evolver(
        LOWER,
        UPPER,
        initial_points=np.eye(6)[:5],
        seed=11,
        config=EvolverConfig(bound_handling="reflect"),
    )
    for _ in range(17):
        c = a.ask()
        a.tell(c.index, sphere(c.x))
    pending = a.ask()  # one in flight when the state is saved
    b = Evolver.from_state_dict(json.loads(json.dumps(a.state_dict())))
    for opt in (a, b):
        opt.tell(pending.index, sphere(pending.x))
    assert_twins_agree(a, b, 20)


@pytest.mark.parametrize(
    "state",
    [{"version": 99}, {"version": 1, "xs": "not a list"}, "not a dict", {"version": 1}],
)
def test_malformed_state_is_refused(state):
    with pytest.raises(StateError):
        Evolver.from_state_dict(state)


def test_unbounded_dimensions_get_normal_initial_points():
    opt = Evolver(np.full(3, -np.inf), np.full(3, np.inf), population_size=50, seed=0)
    xs, _ = opt.population
    assert np.all(np.isfinite(xs))
    assert xs.min() < -1.0 and xs.max() > 1.0


@pytest.mark.parametrize(("mutation", "factor"), [("interpolate", 5.0), ("de", 1e6)])
def test_improves_on_a_sphere(mutation, factor):
    """DE converges; interpolation stays in the population's hull and contracts it, so it
    improves the best initial point several-fold but may stop short of the optimum."""
    points = np.random.default_rng(0).random((10, 6))
    initial_best = min(float(np.sum((p - 0.4) ** 2)) for p in points)
    opt = Evolver(
        LOWER, UPPER, initial_points=points, seed=0, config=EvolverConfig(mutation=mutation)
    )
    for _ in range(1500):
        c = opt.ask()
        opt.tell(c.index, float(np.sum((c.x - 0.4) ** 2)))
    assert opt.best_value < initial_best / factor


def test_add_point_fills_then_replaces_worst():
    opt = Evolver(np.zeros(2), np.ones(2), population_size=2, seed=0)
    assert opt.add_point([0.1, 0.1], 3.0) and opt.add_point([0.2, 0.2], 2.0)
    assert opt.add_point([0.3, 0.3], 5.0) is False
    assert opt.add_point([0.4, 0.4], 1.0) is True
    assert sorted(opt.population[1]) == [1.0, 2.0]


def test_fuzz_tell_keeps_invariants():
    rng = np.random.default_rng(42)
    opt = Evolver(LOWER, UPPER, population_size=6, seed=5)
    pending = []
    best_so_far = [None] * 6
    for _ in range(400):
        if pending and rng.random() < 0.5:
            c = pending.pop(int(rng.integers(len(pending))))
            value = rng.choice(
                [float(rng.normal()), float("nan"), float("inf"), -float("inf")],
                p=[0.85, 0.05, 0.05, 0.05],
            )
            opt.tell(c.index, value)
        else:
            c = opt.ask()
            assert np.all((c.x >= 0) & (c.x <= 1))
            pending.append(c)
        values = opt.population[1]
        for i, v in enumerate(values):  # each individual only ever improves
            if best_so_far[i] is not None:
                assert v is not None and v <= best_so_far[i]
            best_so_far[i] = v
            assert v is None or np.isfinite(v)
    json.dumps(opt.state_dict())


def test_reference_identical_to_target_is_avoided():
    xs = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    values = np.array([0.1, 0.2, 0.9])  # the best other of slot 1 is a copy of it
    for k in range(30):
        child = make_offspring(
            k, 1, xs, values, np.zeros(2), np.ones(2), seed=0, config=EvolverConfig(p_random=0.0)
        )
        assert child.references == (2,)
        assert not np.array_equal(child.x, xs[1])


def test_add_point_clips_skips_busy_slots_and_is_not_asked_again():
    opt = Evolver(np.zeros(2), np.ones(2), population_size=3, seed=0)
    first = opt.ask()  # slot 0 is being evaluated
    assert first.role == "init" and first.target == 0
    assert opt.add_point([1.5, -0.5], 2.0)  # clipped into the bounds, into free slot 1
    xs, values = opt.population
    np.testing.assert_array_equal(xs[1], [1.0, 0.0])
    assert values == [None, 2.0, None]
    assert opt.add_point([0.5, 0.5], float("nan")) is False  # a lost point changes nothing
    assert opt.population[1] == [None, 2.0, None]
    second = opt.ask()  # slot 1 holds the added point: the next initial point is slot 2
    assert (second.role, second.target) == ("init", 2)
    with pytest.raises(ConfigError, match=r"point has shape \(3,\); expected \(2,\)"):
        opt.add_point([0.1, 0.2, 0.3], 1.0)


def test_add_point_replaces_the_worst_and_resets_its_rates():
    opt = Evolver(np.zeros(2), np.ones(2), population_size=2, seed=0,
                  config=EvolverConfig(adapt="jde"))  # fmt: skip
    assert opt.add_point([0.1, 0.1], 3.0) and opt.add_point([0.2, 0.2], 2.0)
    opt._params[0] = (0.9, 0.1)  # as a jDE winner would carry
    assert opt.add_point([0.4, 0.4], 1.0)  # replaces the worst (3.0, slot 0)
    xs, values = opt.population
    assert values == [1.0, 2.0]
    np.testing.assert_array_equal(xs[0], [0.4, 0.4])
    assert opt.state_dict()["params"][0] is None  # starts again from the config's rates
