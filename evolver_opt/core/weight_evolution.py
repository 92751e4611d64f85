"""Weight-space ("element") Evolver: lineage, decisions and greedy replay, without any weights.

The released code of Evolver (Du et al., ACL Findings 2024, arXiv 2406.12208) evolves the full
weight vectors of the models. A genome of every scalar cannot be a trial's parameters, so a
trial stores its **lineage** instead (this module's :class:`ElementLineage`, JSON) and the
weights are rebuilt by replaying accepted offspring (``evolver_opt.merge.weight_population``):

* offspring ``u = where(mask, (1 - F) x_i + F x_r, x_i)`` (Sec. 3, interpolation mutation and
  binomial crossover), the mask drawn per scalar from ``mask_seed``;
* ``x_i`` is the individual that held the target slot when the offspring was decided
  (``parent_trial``), ``x_r`` the one that held the reference slot (``reference_trial``);
* two modes: ``plain`` (fitness = the offspring's own dev score, greedy per slot, Eq. 4) and
  ``merger`` (the offspring tentatively replaces its target, the whole population is merged by
  a static method and that merge's dev score is the fitness; greedy on the merged score).

Replay is a pure function of the finished trials, taken in completion order (ties: trial
number). An offspring is accepted only when it completed with a finite score, strictly better
than a *known* incumbent score, and the incumbent is still what it was derived from (the same
parent in ``plain`` mode, the same population in ``merger`` mode); otherwise it is a lost
offspring. So every process that reads the same trials derives the same population.

numpy only: no torch here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from evolver_opt.core.config import EvolverConfig, rng_for
from evolver_opt.core.operators import choose_target
from evolver_opt.errors import StateError

Mode = Literal["plain", "merger"]
Role = Literal["init", "population", "offspring"]

MODES: tuple[str, ...] = ("plain", "merger")
KEY_ELEMENT = "evolver:element"  # trial system attr: one ElementLineage (JSON)
KEY_ELEMENT_STUDY = "evolver:element_study"  # study system attr: {"mode", "init": [numbers]}

_STREAM_ELEMENT = 4  # draws of the element Evolver (reference, mask seed); see core.config
_MASK_SEED_BOUND = 2**62
# workers deciding at the same time skip each other's indices: an index may pass its trial's
# number by at most the number of workers
_MAX_WORKERS = 1024


@dataclass(frozen=True)
class ElementLineage:
    """What was decided for one trial of a weight-space study (one JSON system attribute).

    ``init``: individual ``slot`` of the initial population (an enqueued trial).
    ``population`` (merger mode): the merge of the initial population ``base``, to score it.
    ``offspring``: ``where(mask(mask_seed, CR), (1 - F) x[parent_trial] + F x[reference_trial],
    x[parent_trial])`` for target ``slot``; ``base`` is the population (trial per slot) it was
    derived from and ``parent_value`` the incumbent's score then (for racing).
    """

    index: int
    role: Role
    trial: int
    slot: int | None = None
    reference: int | None = None
    reference_kind: str | None = None
    parent_trial: int | None = None
    reference_trial: int | None = None
    base: tuple[int, ...] = ()
    F: float = 0.5
    CR: float = 0.5
    mask_seed: int = 0
    parent_value: float | None = None

    def to_attr(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "role": self.role,
            "trial": self.trial,
            "slot": self.slot,
            "reference": self.reference,
            "reference_kind": self.reference_kind,
            "parent_trial": self.parent_trial,
            "reference_trial": self.reference_trial,
            "base": list(self.base),
            "F": self.F,
            "CR": self.CR,
            "mask_seed": self.mask_seed,
            "parent_value": self.parent_value,
        }

    @classmethod
    def from_attr(cls, raw: Any) -> ElementLineage:
        """Parse the JSON attribute; anything malformed raises :class:`StateError`."""
        try:
            if not isinstance(raw, dict):
                raise TypeError(f"expected a JSON object, got {type(raw).__name__}")
            role = raw["role"]
            if role not in ("init", "population", "offspring"):
                raise ValueError(f"role {role!r}")
            lineage = cls(
                index=_int(raw["index"]),
                role=role,
                trial=_int(raw["trial"]),
                slot=_opt_int(raw.get("slot")),
                reference=_opt_int(raw.get("reference")),
                reference_kind=raw.get("reference_kind"),
                parent_trial=_opt_int(raw.get("parent_trial")),
                reference_trial=_opt_int(raw.get("reference_trial")),
                base=tuple(_int(b) for b in raw.get("base", ())),
                F=float(raw.get("F", 0.5)),
                CR=float(raw.get("CR", 0.5)),
                mask_seed=_int(raw.get("mask_seed", 0)),
                parent_value=None
                if raw.get("parent_value") is None
                else float(raw["parent_value"]),
            )
            if role == "offspring" and (
                lineage.slot is None
                or lineage.parent_trial is None
                or lineage.reference_trial is None
            ):
                raise ValueError("an offspring needs slot, parent_trial and reference_trial")
            return lineage
        except (KeyError, TypeError, ValueError) as exc:
            text = repr(raw)
            raise StateError(
                f"malformed {KEY_ELEMENT} attribute {text[:120]}: {type(exc).__name__}: {exc}"
            ) from exc

    def check(self, number: int) -> ElementLineage:
        """``self`` if it can be the lineage of trial ``number`` (it names only earlier trials,
        one index per trial, non-negative slots, F in (0, 1], CR in [0, 1]); else StateError."""
        earlier = [self.parent_trial, self.reference_trial, *self.base]
        problems = [
            f"{name} {value}"
            for name, value, ok in [
                # init trials draw nothing: index -1
                (
                    "index",
                    self.index,
                    (self.role == "init" and self.index == -1)
                    or 0 <= self.index <= number + _MAX_WORKERS,
                ),
                ("trial", self.trial, 0 <= self.trial <= number),
                ("slot", self.slot, self.slot is None or self.slot >= 0),
                ("reference", self.reference, self.reference is None or self.reference >= 0),
                ("earlier trials", earlier, all(t is None or 0 <= t < number for t in earlier)),
                ("F", self.F, 0.0 < self.F <= 1.0),
                ("CR", self.CR, 0.0 <= self.CR <= 1.0),
                ("mask_seed", self.mask_seed, 0 <= self.mask_seed < _MASK_SEED_BOUND),
            ]
            if not ok
        ]
        if problems:
            raise StateError(
                f"malformed {KEY_ELEMENT} attribute of trial {number}: {', '.join(problems)} "
                "cannot belong to it"
            )
        return self

    def needs(self) -> set[int]:
        """Trials whose weights this trial is built from."""
        out = set(self.base)
        out.update(t for t in (self.parent_trial, self.reference_trial) if t is not None)
        return out


@dataclass(frozen=True)
class TrialRecord:
    """A trial as replay sees it. ``value`` is None unless it completed with a finite score."""

    number: int
    finished: bool
    value: float | None
    order: tuple[Any, ...]  # completion order key: (datetime_complete, number)
    lineage: ElementLineage | None


@dataclass(frozen=True)
class Acceptance:
    """One accepted offspring, in replay order: ``trial`` now holds ``slot``."""

    trial: int
    slot: int
    parent_trial: int
    reference_trial: int


@dataclass
class Population:
    """The population after replay: which trial holds each slot and the known scores."""

    mode: Mode
    init: tuple[int, ...]
    holders: list[int]
    values: list[float | None]  # each individual's own dev score (None: unknown)
    score: float | None = None  # merger mode: the merged population's dev score
    accepted: list[Acceptance] = field(default_factory=list)
    score_trial: int | None = None  # merger mode: the trial that scored the current population

    @property
    def size(self) -> int:
        return len(self.holders)

    def best_slot(self) -> int | None:
        """The slot of the best individual by dev score (ties: the lower slot)."""
        scored = [(-v, s) for s, v in enumerate(self.values) if v is not None]
        return min(scored)[1] if scored else None

    def answer_value(self) -> float | None:
        """Dev score of the answer: the best individual (plain) or the merged population."""
        if self.mode == "merger":
            return self.score
        slot = self.best_slot()
        return None if slot is None else self.values[slot]


def _check_in_population(number: int, lineage: ElementLineage, size: int) -> None:
    """Slots and references name individuals of a population of ``size``; else StateError."""
    for name, value in (("slot", lineage.slot), ("reference", lineage.reference)):
        if value is not None and value >= size:
            raise StateError(
                f"malformed {KEY_ELEMENT} attribute of trial {number}: {name} {value} in a "
                f"population of {size}"
            )


def replay(mode: Mode, init: Sequence[int], records: Iterable[TrialRecord]) -> Population:
    """Greedy selection over the finished trials in completion order (see the module doc)."""
    pop = Population(mode, tuple(init), list(init), [None] * len(init))
    slot_of_init = {n: s for s, n in enumerate(init)}
    finished = sorted((r for r in records if r.finished), key=lambda r: (r.order, r.number))
    for r in finished:
        lineage = r.lineage
        if lineage is not None:
            _check_in_population(r.number, lineage, pop.size)
        if r.number in slot_of_init or (lineage is not None and lineage.role == "init"):
            # an initial individual (or a retry of one, which keeps the original's lineage)
            slot = slot_of_init.get(r.number, lineage.slot if lineage is not None else None)
            in_range = slot is not None and 0 <= slot < pop.size
            if in_range and pop.holders[slot] == init[slot] and pop.values[slot] is None:
                pop.values[slot] = r.value  # the first finite score of the initial individual
            continue
        if lineage is None or r.value is None:
            continue
        if lineage.role == "population":
            if mode == "merger" and pop.score is None and list(lineage.base) == pop.holders:
                pop.score, pop.score_trial = r.value, r.number
            continue
        if lineage.role != "offspring":
            continue
        slot = lineage.slot
        assert slot is not None and lineage.parent_trial is not None
        assert lineage.reference_trial is not None
        if not 0 <= slot < pop.size or pop.holders[slot] != lineage.parent_trial:
            continue  # the target moved on since this offspring was decided: lost
        if mode == "plain":
            incumbent = pop.values[slot]
        else:
            if list(lineage.base) != pop.holders:
                continue
            incumbent = pop.score
        if incumbent is None or not r.value > incumbent:
            continue
        pop.holders[slot] = r.number
        pop.accepted.append(
            Acceptance(r.number, slot, lineage.parent_trial, lineage.reference_trial)
        )
        if mode == "plain":
            pop.values[slot] = r.value
        else:
            pop.values[slot] = None  # its own score was never measured
            pop.score, pop.score_trial = r.value, r.number
    return pop


def decide(
    *,
    mode: Mode,
    index: int,
    trial: int,
    population: Population,
    busy: Iterable[int],
    population_trial_exists: bool,
    seed: int,
    config: EvolverConfig,
) -> ElementLineage:
    """The lineage of fresh trial ``trial`` (the ``index``-th fresh decision of the study).

    Merger mode first scores the initial population (role ``population``) when nobody has.
    Targets follow :func:`choose_target` over the offspring count, skipping ``busy`` slots;
    the reference is a random other individual with probability ``p_random`` (always in merger
    mode, where individuals have no own score), else the best other one. Pure function.
    """
    if mode == "merger" and population.score is None and not population_trial_exists:
        return ElementLineage(
            index=index, role="population", trial=trial, base=tuple(population.holders)
        )
    size = population.size
    rng = rng_for(seed, _STREAM_ELEMENT, index)
    target = choose_target(seed, index, size, busy)
    others = [s for s in range(size) if s != target]
    distinct = [s for s in others if population.holders[s] != population.holders[target]]
    others = distinct or others
    scored = [s for s in others if population.values[s] is not None]
    use_random = mode == "merger" or not scored or rng.random() < config.p_random_at(index // size)
    if use_random:
        reference = int(rng.choice(others))
    else:  # the best other individual; ties go to the lower slot
        reference = min(scored, key=lambda s: (-population.values[s], s))  # type: ignore[operator]
    mask_seed = int(rng.integers(_MASK_SEED_BOUND))
    parent_value = population.values[target] if mode == "plain" else population.score
    return ElementLineage(
        index=index,
        role="offspring",
        trial=trial,
        slot=target,
        reference=reference,
        reference_kind="random" if use_random else "best",
        parent_trial=population.holders[target],
        reference_trial=population.holders[reference],
        base=tuple(population.holders) if mode == "merger" else (),
        F=config.F,
        CR=config.CR,
        mask_seed=mask_seed,
        parent_value=parent_value,
    )


def finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)
