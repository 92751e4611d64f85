"""Weight-space Evolver bookkeeping: greedy replay in completion order, decisions, lineage JSON."""

from __future__ import annotations

import pytest

from evolver_opt.core.config import EvolverConfig
from evolver_opt.core.weight_evolution import (
    ElementLineage,
    TrialRecord,
    decide,
    replay,
)
from evolver_opt.errors import StateError


def _init(number: int, value: float | None, order: int) -> TrialRecord:
    lineage = ElementLineage(index=-1, role="init", trial=number, slot=number)
    return TrialRecord(number, True, value, (order,), lineage)


def _child(number, slot, parent, value, order, *, base=(), finished=True) -> TrialRecord:
    lineage = ElementLineage(
        index=number, role="offspring", trial=number, slot=slot, reference=(slot + 1) % 3,
        parent_trial=parent, reference_trial=(slot + 1) % 3, base=tuple(base), mask_seed=number,
    )  # fmt: skip
    return TrialRecord(number, finished, value, (order,), lineage)


def test_plain_replay_is_greedy_against_the_parent_in_completion_order():
    records = [
        _init(0, 0.5, 0),
        _init(1, 0.6, 1),
        _init(2, 0.4, 2),
        _child(3, 0, 0, 0.7, 20),  # completes after trial 4, whose parent was also trial 0
        _child(4, 0, 0, 0.65, 10),  # accepted first: 0.65 > 0.5
        _child(5, 1, 1, 0.6, 11),  # a tie is not better
        _child(6, 2, 2, None, 12),  # FAIL / PRUNED / NaN
        _child(7, 2, 2, 0.45, 13),
        _child(8, 1, 1, 0.99, 14, finished=False),  # still running
    ]
    pop = replay("plain", [0, 1, 2], records)
    # Trial 3 is lost: its parent (trial 0) was replaced by trial 4 before it completed.
    assert pop.holders == [4, 1, 7]
    assert pop.values == [0.65, 0.6, 0.45]
    assert [a.trial for a in pop.accepted] == [4, 7]
    assert pop.best_slot() == 0 and pop.answer_value() == 0.65
    # The same finished trials in another order give the same population.
    assert replay("plain", [0, 1, 2], records[::-1]) == pop


def test_an_offspring_never_beats_an_unknown_score():
    records = [_init(0, None, 0), _init(1, 0.6, 1), _child(2, 0, 0, 0.9, 2), _init(0, 0.5, 3)]
    pop = replay("plain", [0, 1], records[:3])
    assert pop.holders == [0, 1] and pop.values == [None, 0.6]


def test_merger_replay_is_greedy_on_the_merged_score_of_an_unchanged_population():
    population = ElementLineage(index=0, role="population", trial=3, base=(0, 1, 2))
    records = [
        _init(0, 0.9, 0),
        _init(1, 0.6, 1),
        _init(2, 0.4, 2),
        TrialRecord(3, True, 0.5, (3,), population),
        _child(4, 1, 1, 0.55, 4, base=(0, 1, 2)),
        _child(5, 2, 2, 0.8, 5, base=(0, 1, 2)),  # derived from the population before trial 4
        _child(6, 2, 2, 0.52, 6, base=(0, 4, 2)),  # not better than 0.55
        _child(7, 0, 0, 0.6, 7, base=(0, 4, 2)),
    ]
    pop = replay("merger", [0, 1, 2], records)
    assert pop.holders == [7, 4, 2]
    assert pop.score == 0.6 and pop.score_trial == 7 and pop.answer_value() == 0.6
    assert pop.values == [None, None, 0.4]  # an accepted offspring has no own score


def test_decide_is_pure_avoids_busy_targets_and_writes_json_lineage():
    pop = replay("plain", [0, 1, 2, 3], [_init(n, 0.1 * n, n) for n in range(4)])
    config = EvolverConfig(F=0.4, CR=0.3, p_random=0.0)
    kwargs = {"mode": "plain", "index": 5, "trial": 9, "population": pop,
              "population_trial_exists": False, "seed": 7, "config": config}  # fmt: skip
    a = decide(busy=(), **kwargs)
    assert a == decide(busy=(), **kwargs)
    assert a.role == "offspring" and a.parent_trial == a.slot and a.F == 0.4 and a.CR == 0.3
    best_other = max((s for s in range(4) if s != a.slot), key=lambda s: pop.values[s])
    assert a.reference == best_other and a.reference_kind == "best"  # p_random = 0
    b = decide(busy=(a.slot,), **kwargs)
    assert b.slot != a.slot
    assert ElementLineage.from_attr(a.to_attr()) == a
    merger = replay("merger", [0, 1, 2, 3], [_init(n, 0.1 * n, n) for n in range(4)])
    first = decide(**{**kwargs, "mode": "merger", "population": merger}, busy=())
    assert first.role == "population" and first.base == (0, 1, 2, 3)


def test_malformed_lineage_is_a_clear_state_error():
    with pytest.raises(StateError, match="malformed evolver:element attribute"):
        ElementLineage.from_attr({"index": 1, "role": "offspring", "trial": 2, "slot": 0})
    with pytest.raises(StateError, match="role 'mutant'"):
        ElementLineage.from_attr({"index": 1, "role": "mutant", "trial": 2})


def _element_offspring(**changes) -> ElementLineage:
    fields = {"index": 3, "role": "offspring", "trial": 10, "slot": 1, "reference": 0,
              "parent_trial": 4, "reference_trial": 2, "base": (0, 1, 2), "F": 0.5, "CR": 0.5,
              "mask_seed": 7}  # fmt: skip
    return ElementLineage(**(fields | changes))


def test_element_lineage_check_accepts_what_its_trial_can_hold():
    lineage = _element_offspring()
    assert lineage.check(10) is lineage  # its own trial
    assert _element_offspring(trial=8).check(10)  # a retry keeps an earlier trial's lineage
    assert _element_offspring(F=1.0, CR=0.0, index=10 + 1024).check(10)  # the edges
    assert _element_offspring(CR=1.0, mask_seed=0, index=0).check(10)
    init = ElementLineage(index=-1, role="init", trial=0, slot=0)
    assert init.check(0) is init


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"index": -1}, "index -1"),
        ({"index": 10 + 1025}, "index 1035"),
        ({"trial": 11}, "trial 11"),
        ({"trial": -1}, "trial -1"),
        ({"slot": -1}, "slot -1"),
        ({"reference": -2}, "reference -2"),
        ({"parent_trial": 10}, "earlier trials"),
        ({"reference_trial": 12}, "earlier trials"),
        ({"base": (0, 10)}, "earlier trials"),
        ({"base": (-1,)}, "earlier trials"),
        ({"F": 0.0}, "F 0.0"),
        ({"F": 1.5}, "F 1.5"),
        ({"CR": -0.1}, "CR -0.1"),
        ({"CR": 1.1}, "CR 1.1"),
        ({"mask_seed": -1}, "mask_seed -1"),
        ({"mask_seed": 2**62}, f"mask_seed {2**62}"),
    ],
)
def test_element_lineage_check_names_what_cannot_belong_to_the_trial(changes, named):
    with pytest.raises(StateError, match=f"trial 10: .*{named}"):
        _element_offspring(**changes).check(10)
