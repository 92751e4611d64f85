"""Contracts of the offspring operators and the population functions that mutation testing
found unchecked: the rates actually used, reference kinds, Eq. 3's forced coordinate, the
start-point slots, the parent's value and the fresh index under racing workers."""

from __future__ import annotations

import numpy as np
import pytest

from evolver_opt.core.config import EvolverConfig
from evolver_opt.core.operators import make_offspring
from evolver_opt.core.population import Finished, Lineage, Record, next_index, next_lineage
from evolver_opt.errors import ConfigError

DIM = 6
LOWER, UPPER = np.zeros(DIM), np.ones(DIM)


def _population(size: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs = rng.random((size, DIM))
    return xs, np.sum((xs - 0.3) ** 2, axis=1)


def _offspring(index: int, config: EvolverConfig, **kw):
    xs, values = _population()
    return make_offspring(index, index % 5, xs, values, LOWER, UPPER, 7, config, **kw)


def test_the_rates_passed_are_the_rates_used_and_recorded():
    config = EvolverConfig(F=0.5, CR=0.5)
    for index in range(20):
        plain = _offspring(index, config)
        own = _offspring(index, config, F=0.9, CR=1.0)
        assert (plain.F, plain.CR) == (0.5, 0.5)
        assert (own.F, own.CR) == (0.9, 1.0)
        # CR = 1 takes every coordinate from the mutant: (1 - F) x_i + F x_r with F = 0.9
        xs, _ = _population()
        r = own.references[0]
        expected = np.clip((1 - 0.9) * xs[own.target] + 0.9 * xs[r], 0, 1)
        np.testing.assert_allclose(own.x, expected)
        assert own.n_from_mutant == DIM


def test_reference_kinds_follow_p_random():
    always = [_offspring(i, EvolverConfig(p_random=1.0)) for i in range(30)]
    never = [_offspring(i, EvolverConfig(p_random=0.0)) for i in range(30)]
    assert {o.reference_kind for o in always} == {"random"}
    assert {o.reference_kind for o in never} == {"best"}
    _, values = _population()
    for o in never:  # the best other individual
        others = [j for j in range(5) if j != o.target]
        assert o.references == (min(others, key=lambda j: values[j]),)


def test_crossover_always_takes_one_coordinate_where_the_mutant_differs():
    config = EvolverConfig(CR=0.0)  # no binomial draw passes: only Eq. 3's j_rand
    xs, values = _population()
    xs[:, :3] = xs[0, :3]  # every individual agrees on the first three coordinates
    for index in range(40):
        o = make_offspring(index, index % 5, xs, values, LOWER, UPPER, 3, config)
        parent = xs[o.target]
        changed = np.flatnonzero(o.x != parent)
        assert o.n_from_mutant == 1
        assert changed.size == 1 and changed[0] >= 3  # never a coordinate where they agree


def test_population_too_small_is_refused_with_its_size():
    xs, values = _population(size=1)
    with pytest.raises(ConfigError, match="population_size=1"):
        make_offspring(0, 0, xs, values, LOWER, UPPER, 0, EvolverConfig())
    xs, values = _population(size=2)  # two is enough for interpolation
    assert make_offspring(0, 0, xs, values, LOWER, UPPER, 0, EvolverConfig()).target == 0


def _finished(records: list[Record]) -> Finished:
    finished = Finished()
    for r in records:
        finished.add(r)
    return finished


def _start(number: int, value: float) -> Record:
    return Record(number, True, value, None, True)


def test_random_start_points_fill_the_slots_after_the_enqueued_ones():
    finished = _finished([_start(0, 1.0), _start(1, 2.0)])
    slots = []
    for number in (2, 3, 4):
        lineage = next_lineage(finished, [], number, size=5, n_enqueued=2, seed=0, sign=1.0)
        assert lineage.role == "init" and lineage.index == number - 2
        slots.append(lineage.slot)
        finished.add(Record(number, True, 3.0, lineage))
    assert slots == [2, 3, 4]


def test_an_offspring_records_its_parent_and_the_parent_value_in_the_objective_direction():
    records = [_start(0, -0.8), _start(1, -0.6)]  # minimization form of 0.8 and 0.6 (maximize)
    finished = _finished(records)
    lineage = next_lineage(finished, [], 2, size=2, n_enqueued=2, seed=0, sign=-1.0)
    assert lineage.role == "offspring"
    parent = records[lineage.slot]
    assert lineage.parent_trial == parent.number
    assert lineage.parent_value == pytest.approx(-parent.value)
    assert lineage.index == 0


def _offspring_lineage(index: int, trial: int) -> Lineage:
    return Lineage(index=index, role="offspring", slot=0, trial=trial, parent_trial=0)


def test_fresh_index_counts_earlier_trials_that_draw_and_skips_held_indices():
    finished = _finished([_start(0, 1.0), _start(1, 2.0)])
    drawing = Record(2, False, drawing=True)  # an earlier trial being drawn: it takes index 0
    running = Record(3, False, lineage=_offspring_lineage(1, 3), running=True)  # holds index 1
    later = Record(7, False, drawing=True)  # drawn after trial 6: no index before it
    assert next_index(finished, [drawing, running, later], 6) == 2
    assert next_index(finished, [later], 4) == 0
    assert next_index(finished, [drawing], 2) == 0  # a trial never counts itself
    enqueued = Record(3, False, running=True)  # an enqueued start point: it draws no index
    assert next_index(finished, [enqueued], 6) == 0
    # trial 5 raced ahead and holds index 0: trial 4 takes the next free one
    assert next_index(finished, [Record(5, False, lineage=_offspring_lineage(0, 5))], 4) == 1


def test_fresh_index_counts_a_running_trial_by_its_own_lineage_not_a_retry():
    finished = _finished([_start(0, 1.0), _start(1, 2.0)])
    own = Record(3, False, lineage=_offspring_lineage(7, 3), running=True)
    retry = Record(4, False, lineage=_offspring_lineage(5, 3), running=True)
    assert next_index(finished, [own], 6) == 1  # trial 3 drew index 7 for itself: one before
    assert next_index(finished, [retry], 6) == 0  # a retry of trial 3 drew nothing


def test_an_index_held_by_a_finished_retry_is_never_drawn_again():
    # trial 3 retried trial 2 (which failed before it was recorded) and kept its index 0
    lineage = Lineage(index=0, role="offspring", slot=0, trial=2, parent_trial=0)
    finished = _finished(
        [_start(0, 1.0), _start(1, 2.0), Record(3, True, 0.5, lineage, retry_of=2)]
    )
    assert next_index(finished, [], 4) == 1
