"""The population as a pure function of trial records (``core.population``)."""

from __future__ import annotations

import random

import pytest

from evolver_opt.core.population import (
    Finished,
    Lineage,
    Record,
    better,
    busy_slots,
    fold_into,
    is_start_point,
    next_index,
    next_lineage,
    population_size,
    select,
    split,
    start_points,
)
from evolver_opt.errors import StateError


def _start(number: int, value: float | None, **kw) -> Record:
    return Record(number=number, finished=True, value=value, start_point=True, **kw)


def _select(records: list[Record], size: int) -> list[Record | None]:
    finished, unfinished = split(records)
    return select(finished.valued, start_points(finished, unfinished), size)


def _index(records: list[Record], number: int) -> int:
    return next_index(*split(records), number)


def _child(number: int, slot: int, value: float | None, index: int, **kw) -> Record:
    lineage = Lineage(index=index, role="offspring", slot=slot, trial=kw.pop("trial", number))
    return Record(number=number, finished=True, value=value, lineage=lineage, **kw)


def test_start_points_are_the_users_points_in_order_never_retries_nor_drawn():
    assert is_start_point(retry=False, enqueued=True, finished=False, drawn=False, params=False)
    assert is_start_point(retry=False, enqueued=False, finished=True, drawn=False, params=True)
    assert not is_start_point(retry=True, enqueued=True, finished=True, drawn=False, params=True)
    assert not is_start_point(retry=False, enqueued=False, finished=True, drawn=True, params=True)
    assert not is_start_point(retry=False, enqueued=False, finished=False, drawn=False, params=True)
    records = [_start(4, 1.0), _child(2, 0, 0.5, 0), _start(1, 2.0)]
    waiting = Record(number=6, finished=False, start_point=True)  # enqueued, not run yet
    assert start_points(*split(records)) == [1, 4]
    assert start_points(*split([*records, waiting])) == [1, 4, 6]
    with pytest.raises(ValueError, match="not finished"):
        Finished().add(waiting)


def test_selection_is_strict_lost_offspring_never_enter_and_order_does_not_matter():
    records = [
        _start(0, 1.0),
        _start(1, 3.0),
        _child(2, 0, 1.0, 0),  # ties its parent: not better, the parent stays
        _child(3, 1, 2.0, 1),  # better than slot 1's start
        _child(4, 1, None, 2),  # lost (FAIL, PRUNED or NaN)
        _child(5, 0, 0.9, 3),
    ]
    best = _select(records, 2)
    assert [r.number for r in best] == [5, 3]
    assert [r.number for r in _select(records[:3], 2)] == [0, 1]  # the tie kept the parent
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    assert _select(shuffled, 2) == best
    unfinished = Record(6, False, 0.1, Lineage(4, "offspring", 0, trial=6))
    assert _select([*records, unfinished], 2)[0].number == 5  # not finished: not in it
    fold_into(best, [unfinished], {0: 0, 1: 1})  # folded in directly: still not in it
    assert [r.number for r in best] == [5, 3]


def test_the_secondary_score_breaks_ties_and_a_retry_takes_its_start_points_slot():
    a = _start(0, 1.0, secondary=-0.5)
    b = _child(1, 0, 1.0, 0, secondary=-0.7)
    assert better(b, a) and not better(a, b)
    assert _select([a, b], 1)[0].number == 1
    retry = Record(number=3, finished=True, value=0.2, retry_of=0)  # of start point 0
    assert _select([a, _start(2, 5.0), retry], 2)[0].number == 3
    assert _select([a, _start(2, 5.0), retry], 2)[1].number == 2


def test_a_slot_outside_the_population_and_a_malformed_lineage_are_refused():
    with pytest.raises(StateError, match="slot 3 in a population of 2"):
        _select([_start(0, 1.0), _start(1, 1.0), _child(2, 3, 0.5, 0)], 2)
    with pytest.raises(StateError, match="cannot belong to it"):
        _child(2, 0, 0.5, 0, trial=7)  # drawn for a later trial
    with pytest.raises(StateError, match="cannot belong to it"):
        Record(2, True, 0.5, Lineage(0, "offspring", 0, parent_trial=2, trial=2))


def test_fresh_index_counts_trials_drawing_before_and_skips_held_indices():
    drawn = [_child(n, 0, 1.0, index=n - 2) for n in (2, 3, 4)]  # indices 0, 1, 2
    starts = [_start(0, 1.0), _start(1, 1.0)]
    assert _index([*starts, *drawn], 5) == 3
    # a retry (its lineage drawn for trial 3) does not draw an index of its own
    retry = _child(5, 0, 1.0, index=1, trial=3, retry_of=3)
    assert _index([*starts, *drawn, retry], 6) == 3
    # trial 5 is being drawn by another worker right now: it will take index 3
    drawing = Record(number=5, finished=False, drawing=True)
    assert _index([*starts, *drawn, drawing], 6) == 4
    # a later trial already holds index 3 (workers racing): skipped
    racer = Record(number=7, finished=False, lineage=Lineage(3, "offspring", 1, trial=7))
    assert _index([*starts, *drawn, racer], 6) == 4


def test_next_lineage_draws_random_starts_first_then_offspring_of_the_current_best():
    starts = [_start(0, 2.0), _start(1, 1.0)]
    first = next_lineage(*split(starts), 2, size=3, n_enqueued=2, seed=0, sign=-1.0)
    assert (first.role, first.index, first.slot, first.trial) == ("init", 0, 2, 2)
    init = Record(2, True, 3.0, Lineage(0, "init", 2, trial=2))
    running = Record(3, False, None, Lineage(1, "offspring", 0, trial=3), running=True)
    assert busy_slots([running], 4) == [0]
    finished, unfinished = split([*starts, init, running])
    child = next_lineage(finished, unfinished, 4, size=3, n_enqueued=2, seed=0, sign=-1.0)
    assert child.role == "offspring" and child.index == 2 and child.slot != 0  # 0 is busy
    parent = _select([*starts, init], 3)[child.slot]
    assert child.parent_trial == parent.number and child.parent_value == -parent.value


def test_population_size_rules():
    assert population_size(3, None, None) == 3
    assert population_size(0, None, None) == 10
    assert population_size(3, None, 4) == 7
    assert population_size(3, 12, None) == 12
