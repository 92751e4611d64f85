"""The Evolver population as a pure function of a study's trial records (no storage here).

A study never stores its population: it is derived, every time, from what the trials say.
Each trial becomes a :class:`Record` (number, finished or not, value in minimization form,
its :class:`Lineage` when the sampler drew it, whether it is a start point the user gave, the
trial it retries). From the records:

* :class:`Finished`: the finished records folded in one at a time (a sampler's memo: a
  finished trial never changes); :func:`split` folds a whole list;
* :func:`start_points`: the user's start points (enqueued or added finished trials, never a
  retry nor a trial the sampler drew), in trial-number order; start point ``i`` is slot ``i``;
* :func:`select`: greedy selection, order-free: each slot's individual is the best finished
  record among its start (a start point, a retry of one, or a random initial point) and the
  offspring that targeted it (:func:`better`: lower value, then lower secondary score, then the
  earlier trial). FAIL, PRUNED and NaN trials are lost offspring: they never enter it;
* :func:`next_lineage`: the fresh index ``k`` of a trial being drawn (the trials before it that
  drew their own, skipping indices other workers hold), and from it its role and target.

Every process that reads the same trials derives the same population, whatever order they
finished in. numpy-free, optuna-free: the samplers adapt their trials to records.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from evolver_opt.core.operators import choose_target
from evolver_opt.errors import StateError

PREFIX = "evolver:"
# One trial system attribute holds a trial's whole lineage, written in one call, so that no
# reader ever sees half of it.
KEY_LINEAGE = PREFIX + "lineage"
KEY_POPULATION = PREFIX + "population"  # study system attr: {"size": P, "n_enqueued": E}

# Workers drawing at the same time may push a trial's index past its number (an index another
# in-flight trial holds is skipped), by at most the number of workers.
MAX_WORKERS = 1024

Role = Literal["init", "offspring"]


@dataclass(frozen=True)
class Lineage:
    """What the sampler decided for one trial (stored as the JSON attribute ``KEY_LINEAGE``)."""

    index: int
    role: Role
    slot: int
    references: tuple[int, ...] = ()
    reference_kind: str | None = None
    parent_trial: int | None = None
    parent_value: float | None = None  # the parent's value then, in the objective's direction
    trial: int = -1  # number of the trial it was drawn for (a retry keeps the original's)
    # self-adaptive (jDE) offspring only: the F and CR it was made with, inherited if it wins
    F: float | None = None
    CR: float | None = None

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> Lineage | None:
        """The lineage in a trial's system attributes (None if there is none); anything
        malformed raises :class:`StateError`."""
        raw = attrs.get(KEY_LINEAGE)
        if raw is None:
            return None
        try:
            if not isinstance(raw, dict):
                raise TypeError(f"expected a JSON object, got {type(raw).__name__}")
            role = raw["role"]
            if role not in ("init", "offspring"):
                raise ValueError(f"role {role!r}")
            parent_value = raw.get("parent_value")
            parent_trial = raw.get("parent_trial")
            return cls(
                index=as_int(raw["index"]),
                role=role,
                slot=as_int(raw["slot"]),
                references=tuple(as_int(r) for r in raw.get("references", ())),
                reference_kind=raw.get("reference_kind"),
                parent_trial=None if parent_trial is None else as_int(parent_trial),
                parent_value=None if parent_value is None else float(parent_value),
                trial=as_int(raw["trial"]),
                F=_rate(raw.get("F"), "F", 2.0),
                CR=_rate(raw.get("CR"), "CR", 1.0),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(
                f"malformed {KEY_LINEAGE} system attribute {preview(raw)}: {type(exc).__name__}: {exc}"
            ) from exc

    def to_attr(self) -> dict[str, Any]:
        attr = {
            "trial": self.trial,
            "index": self.index,
            "role": self.role,
            "slot": self.slot,
            "references": list(self.references),
            "reference_kind": self.reference_kind,
            "parent_trial": self.parent_trial,
            "parent_value": self.parent_value,
        }
        if self.F is not None:  # written only by self-adaptive studies (older ones unchanged)
            attr |= {"F": self.F, "CR": self.CR}
        return attr


@dataclass(frozen=True)
class Record:
    """One trial as the population sees it. A finished record's lineage is checked on creation
    (it may name only what existed when its trial was drawn)."""

    number: int
    finished: bool
    value: float | None = None  # minimization form; None unless COMPLETE with a finite value
    lineage: Lineage | None = None
    start_point: bool = False  # see is_start_point
    retry_of: int | None = None  # a retry (Optuna's failed_trial): the first trial of its chain
    secondary: float = math.inf  # tie-break score, minimization form; +inf when unused
    running: bool = False  # RUNNING now (its target is busy)
    drawing: bool = False  # unfinished, no lineage, no params: a worker is drawing it right now
    source: Any = field(default=None, repr=False, compare=False)  # e.g. the FrozenTrial

    def __post_init__(self) -> None:
        if self.finished and self.lineage is not None:
            _check_lineage(self.number, self.lineage, self.retry_of)


def parent_value(system_attrs: Mapping[str, Any]) -> float | None:
    """The value an Evolver offspring must beat, from its trial's system attributes: its
    parent's value when it was drawn (in the objective's direction), or None when the trial is
    not an offspring with a scored parent. What an objective needs for exact racing; it reads
    the trial attribute (``evolver:lineage``), not the sampler."""
    lineage = Lineage.from_attrs(dict(system_attrs))
    if lineage is None or lineage.role != "offspring":
        return None
    return lineage.parent_value


def is_start_point(
    *, retry: bool, enqueued: bool, finished: bool, drawn: bool, params: bool
) -> bool:
    """The one definition of a start point: a point the user gave, enqueued (Optuna's
    ``fixed_params``) or added finished with parameters, that the sampler did not draw; a retry
    belongs to the trial it retries, never a start point of its own."""
    return not retry and (enqueued or (finished and not drawn and params))


def better(a: Record, b: Record) -> bool:
    """Greedy selection's strict order: lower value, then the lower secondary score, then the
    earlier trial (a tie never replaces an individual)."""
    return (a.value, a.secondary, a.number) < (b.value, b.secondary, b.number)  # type: ignore[operator]


@dataclass
class Finished:
    """The finished records of a study, folded in one at a time: the order never matters, and
    a finished trial never changes, so a sampler folds each one in once (its memo)."""

    start_points: list[int] = field(default_factory=list)  # start point numbers, sorted
    fresh: list[int] = field(default_factory=list)  # numbers that drew an index, sorted
    held: set[int] = field(default_factory=set)  # the indices their lineages hold
    valued: list[Record] = field(default_factory=list)  # those with a value (selection's)

    def add(self, record: Record) -> None:
        if not record.finished:
            raise ValueError(f"trial {record.number} is not finished")
        lineage = record.lineage
        if lineage is None:
            if record.start_point:
                bisect.insort(self.start_points, record.number)
        else:
            self.held.add(lineage.index)
            if lineage.trial == record.number:
                bisect.insort(self.fresh, record.number)
        if record.value is not None:
            self.valued.append(record)


def split(records: Iterable[Record]) -> tuple[Finished, list[Record]]:
    """A study's records as the finished ones folded, and the unfinished ones."""
    finished, unfinished = Finished(), []
    for r in records:
        if r.finished:
            finished.add(r)
        else:
            unfinished.append(r)
    return finished, unfinished


def start_points(finished: Finished, unfinished: Iterable[Record]) -> list[int]:
    """Trial numbers of the user's start points, in order (slot ``i`` starts as the ``i``-th):
    finished ones and those still waiting (enqueued)."""
    waiting = [r.number for r in unfinished if r.lineage is None and r.start_point]
    return sorted(finished.start_points + waiting) if waiting else finished.start_points


def slot_of(record: Record, start_slot: dict[int, int]) -> int | None:
    """The slot a record belongs to: its lineage's, else its start point's (``start_slot``:
    start point number -> slot; a retry of a start point takes that start point's slot)."""
    if record.lineage is not None:
        return record.lineage.slot
    return start_slot.get(record.number if record.retry_of is None else record.retry_of)


def select(valued: Iterable[Record], start_points: Sequence[int], size: int) -> list[Record | None]:
    """Greedy selection, order-free: each slot's best finished record with a value (None: the
    slot has none yet); ``valued``: ``Finished.valued``."""
    best: list[Record | None] = [None] * size
    fold_into(best, valued, {n: s for s, n in enumerate(start_points[:size])})
    return best


def fold_into(
    best: list[Record | None], records: Iterable[Record], start_slot: dict[int, int]
) -> None:
    """Greedy selection of ``records`` into ``best`` (a selection of other records, updated in
    place): the order the records come in never matters, so a caller may fold them in as they
    finish. ``select`` is this from an empty population."""
    size = len(best)
    for r in records:
        if r.value is None or not r.finished:
            continue
        slot = slot_of(r, start_slot)
        if slot is None:
            continue
        if slot >= size:
            raise StateError(
                f"malformed {KEY_LINEAGE} of trial {r.number}: slot {slot} in a population of "
                f"{size} (expected 0 <= slot < {size})"
            )
        current = best[slot]
        if current is None or better(r, current):
            best[slot] = r


def replaced_parents(
    valued: Iterable[Record], start_points: Sequence[int], size: int, *, limit: int
) -> list[Record]:
    """JADE's archive: the individuals that offspring replaced, the last ``limit`` of them
    (oldest first), with the records taken in trial-number order (a pure function of the set)."""
    start_slot = {n: s for s, n in enumerate(start_points[:size])}
    best: list[Record | None] = [None] * size
    out: list[Record] = []
    for r in sorted(valued, key=lambda r: r.number):
        slot = slot_of(r, start_slot)
        if slot is None or slot >= size or r.value is None:
            continue
        current = best[slot]
        if current is None or better(r, current):
            if current is not None:
                out.append(current)
            best[slot] = r
    return out[-limit:] if limit > 0 else []


def population_size(
    n_start_points: int, population_size: int | None, n_startup_trials: int | None
) -> int:
    """The size a sampler gives a population with ``n_start_points`` start points: fixed, or
    the start points plus ``n_startup_trials`` random ones (10 without any start point)."""
    if population_size is not None:
        return population_size
    if n_startup_trials is not None:
        return n_start_points + n_startup_trials
    return n_start_points if n_start_points else 10


def next_index(finished: Finished, unfinished: Iterable[Record], number: int) -> int:
    """The fresh index of trial ``number``: how many trials before it drew (or are drawing) an
    index of their own, moved past any index another trial holds (workers racing)."""
    k = bisect.bisect_left(finished.fresh, number)
    held = set()
    for r in unfinished:
        if r.number == number:
            continue
        lineage = r.lineage
        if lineage is not None:
            held.add(lineage.index)
        if r.number < number and (
            (lineage is not None and lineage.trial == r.number) or (lineage is None and r.drawing)
        ):
            k += 1
    while k in finished.held or k in held:  # a race between workers: never reuse an index
        k += 1
    return k


def busy_slots(unfinished: Iterable[Record], number: int) -> list[int]:
    """Targets of the other offspring running now (a new offspring avoids them when it can)."""
    return [
        r.lineage.slot
        for r in unfinished
        if r.running and not r.finished and r.lineage is not None and r.number != number
    ]


def next_lineage(
    finished: Finished,
    unfinished: Sequence[Record],
    number: int,
    *,
    size: int,
    n_enqueued: int,
    seed: int,
    sign: float,
    best: Sequence[Record | None] | None = None,
) -> Lineage:
    """Index, role and target of trial ``number`` being drawn: the first ``size - n_enqueued``
    fresh indices are random initial points, the rest offspring of a target chosen from
    ``(seed, k)``. ``sign``: +1 to minimize, -1 to maximize (``parent_value`` is stored in the
    objective's direction). ``best``: the selection, if the caller has it."""
    k = next_index(finished, unfinished, number)
    n_random = size - n_enqueued
    if k < n_random:
        return Lineage(index=k, role="init", slot=n_enqueued + k, trial=number)
    target = choose_target(seed, k - n_random, size, busy_slots(unfinished, number))
    if best is None:
        best = select(finished.valued, start_points(finished, unfinished), size)
    parent = best[target]
    return Lineage(
        index=k,
        role="offspring",
        slot=target,
        parent_trial=None if parent is None else parent.number,
        parent_value=None if parent is None or parent.value is None else parent.value * sign,
        trial=number,
    )


def _check_lineage(number: int, lineage: Lineage, retry_of: int | None) -> None:
    """A lineage names only what existed when its trial was drawn: an index at most its own
    number (plus racing workers), a parent below it, its own number as ``trial`` (a retry: a
    trial of its chain), a slot >= 0 (the upper bound is checked against the population size)."""
    # a retry keeps the lineage of a trial of its chain (or draws its own, e.g. after a
    # storage error before the lineage was copied)
    first = number if retry_of is None else retry_of
    parent = lineage.parent_trial
    if not (
        0 <= lineage.index <= number + MAX_WORKERS
        and first <= lineage.trial <= number
        and lineage.slot >= 0
        and (parent is None or 0 <= parent < number)
        and all(0 <= r for r in lineage.references)
    ):
        raise StateError(
            f"malformed {KEY_LINEAGE} of trial {number}: {preview(lineage.to_attr())} cannot "
            f"belong to it (expected {first} <= trial <= {number}, "
            f"0 <= index <= {number + MAX_WORKERS}, slot >= 0, 0 <= parent_trial < {number})"
        )


def _rate(value: Any, name: str, high: float) -> float | None:
    """An optional F or CR of a stored lineage: None, or a float in (0, high] (CR: [0, 1])."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} {value!r} is not a number")
    low_ok = value >= 0.0 if name == "CR" else value > 0.0
    if not (low_ok and value <= high):
        raise ValueError(f"{name} {value!r} is outside its range")
    return float(value)


def as_int(value: Any) -> int:
    """``value`` as an int if it is one (JSON may give 3.0); else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


def preview(value: Any) -> str:
    """A short repr for error messages."""
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
