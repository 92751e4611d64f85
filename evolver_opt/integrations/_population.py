"""The Evolver population as a study's trials define it (derived, never stored)."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from evolver_opt.core.evolver import EvolverConfig, choose_target, make_offspring, random_point
from evolver_opt.errors import ConfigError, StateError
from evolver_opt.integrations._lazy_params import has_params
from evolver_opt.integrations._lineage import (
    FINISHED,
    KEY_LINEAGE,
    KEY_POPULATION,
    Lineage,
    as_int,
    preview,
)
from evolver_opt.integrations._space import NumericSpace

if TYPE_CHECKING:
    from evolver_opt.integrations.optuna_sampler import EvolverSampler


class StudyCache:
    """What this process derived from one study, updated from the trials that finished since
    the last ask only: a finished trial never changes, so its record and its share of the
    counts below are computed once (per ask, the work grows with the trials in flight, not
    with the study)."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage  # keeps the storage alive, so its id() stays unique
        self.finished: set[int] = set()  # numbers of the finished trials taken in
        self.population: dict[str, int] | None = None
        self._seen = 0  # trials numbered below this have been looked at
        self._open: set[int] = set()  # ... and of those, the ones unfinished when last looked at
        self.fresh: list[int] = []  # finished trials that drew an index of their own (sorted)
        self.indices: set[int] = set()  # lineage indices of finished trials
        self.enqueued: list[int] = []  # finished start points given by the user (sorted)
        self.slot_best: dict[int, _Record] = {}  # best finished offspring/init trial per slot
        self.unlinked: list[_Record] = []  # finished start points (and retries) with a value
        self._space_key: tuple | None = None
        self.vectors: dict[int, np.ndarray] = {}  # trial number -> its vector over the space
        self.initial: dict[tuple[int, int], list[np.ndarray]] = {}  # (size, n_enqueued) -> rows

    def update(
        self, trials: list[FrozenTrial], sign: float, tie_break: str | None = None
    ) -> list[FrozenTrial]:
        """Take in the trials finished since the last call; returns the unfinished ones.
        ``tie_break``: the user attribute that orders trials of equal value.

        ``trials`` may be an older snapshot than an earlier call's (threads of one process
        each read their own): what it does not show stays to be looked at next time."""
        n = len(trials)
        if trials and trials[-1].number == n - 1:  # numbered 0..n-1, as Optuna does
            look = [trials[k] for k in sorted(self._open) if k < n] + trials[self._seen :]
            self._seen = max(self._seen, n)
        else:  # a filtered study (some pruners pass one): look at every trial
            look = [t for t in trials if t.number not in self.finished]
        self._open.difference_update(t.number for t in look)
        unfinished = []
        for t in look:
            if t.number in self.finished:
                continue
            if t.state not in FINISHED:
                self._open.add(t.number)
                unfinished.append(t)
                continue
            self._add(_Record.of(t, sign, tie_break))
        return unfinished

    def _add(self, record: _Record) -> None:
        self.finished.add(record.number)
        lineage = record.lineage
        if lineage is None:
            if record.enqueued:
                bisect.insort(self.enqueued, record.number)
            if record.value is not None:
                self.unlinked.append(record)
            return
        _check_lineage(record, lineage)
        self.indices.add(lineage.index)
        if lineage.trial == record.number:
            bisect.insort(self.fresh, record.number)
        current = self.slot_best.get(lineage.slot)
        if record.value is not None and (current is None or _better(record, current)):
            self.slot_best[lineage.slot] = record

    def for_space(self, space: NumericSpace) -> StudyCache:
        """Drops the vectors computed over another search space."""
        if space.key != self._space_key:
            self._space_key = space.key
            self.vectors.clear()
            self.initial.clear()
        return self


# Workers drawing at the same time may push a trial's index past its number (an index another
# in-flight trial holds is skipped), by at most the number of workers.
MAX_WORKERS = 1024


def _check_lineage(record: _Record, lineage: Lineage) -> None:
    """A lineage names only what existed when its trial was drawn: an index at most its own
    number (plus racing workers), a parent below it, its own number as ``trial`` (a retry: a trial
    of its chain), a slot >= 0 (the upper bound is checked against the population size)."""
    number = record.number
    # a retry keeps the lineage of a trial of its chain (or draws its own, e.g. after a
    # storage error before the lineage was copied)
    first = number if record.retry_of is None else record.retry_of
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


def _better(a: _Record, b: _Record) -> bool:
    """Greedy selection's order: lower value, then (with a tie-break attribute) the lower
    secondary, then the earlier trial."""
    return (a.value, a.secondary, a.number) < (b.value, b.secondary, b.number)  # type: ignore[operator]


@dataclass(frozen=True)
class _Record:
    """A finished trial as the population sees it (value in minimization form)."""

    number: int
    lineage: Lineage | None
    enqueued: bool
    value: float | None  # None: lost (FAIL, PRUNED, NaN)
    trial: FrozenTrial = field(repr=False, compare=False)
    retry_of: int | None = None  # a heartbeat retry (or rescued copy): the trial it replaces
    # the tie-break attribute in minimization form; +inf when none is used or it is missing
    secondary: float = math.inf

    @property
    def params(self) -> dict[str, Any]:
        """Read when used: a storage may read a finished trial's parameters lazily, and only
        the population's records need theirs."""
        return self.trial.params

    @classmethod
    def of(cls, trial: FrozenTrial, sign: float, tie_break: str | None = None) -> _Record:
        value = trial.value if trial.state == TrialState.COMPLETE else None
        ok = value is not None and math.isfinite(value)
        return cls(
            number=trial.number,
            lineage=Lineage.from_attrs(trial.system_attrs),
            enqueued=_is_enqueued(trial),
            value=sign * value if ok else None,  # type: ignore[operator]
            trial=trial,
            retry_of=_retry_of(trial),
            secondary=_secondary(trial, sign, tie_break),
        )


def _secondary(trial: FrozenTrial, sign: float, key: str | None) -> float:
    """``sign * trial.user_attrs[key]`` (better in the objective's direction), +inf if unusable:
    a missing, non-numeric or non-finite value never wins a tie."""
    if key is None:
        return math.inf
    value = trial.user_attrs.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return math.inf
    return sign * float(value)


class PopulationView:
    """The population: the cache's finished trials plus a snapshot of the unfinished ones."""

    def __init__(
        self,
        sampler: EvolverSampler,
        study: Study,
        trials: list[FrozenTrial],
        sign: float,
        cache: StudyCache,
    ) -> None:
        self.sampler = sampler
        self.study = study
        self.trials = trials
        self.sign = sign
        self.cache = cache
        self.unfinished = cache.update(trials, sign, sampler.tie_break)
        self._lineages = {t.number: Lineage.from_attrs(t.system_attrs) for t in self.unfinished}
        waiting = [
            t.number
            for t in self.unfinished
            if _is_enqueued(t) and self._lineages[t.number] is None
        ]
        self._enqueued = sorted(cache.enqueued + waiting)

    def enqueued_numbers(self) -> list[int]:
        """Trial numbers of initial points given by the user (enqueued, not retries)."""
        return self._enqueued

    def population(self) -> dict[str, int]:
        """Population size and enqueued count, fixed in a study attribute on first use."""
        if self.cache.population is None:
            self.cache.population = self._read_or_fix_population()
        return self.cache.population

    def _read_or_fix_population(self) -> dict[str, int]:
        stored = self.study._storage.get_study_system_attrs(self.study._study_id).get(
            KEY_POPULATION
        )
        if stored is not None:
            try:
                size, n_enqueued = as_int(stored["size"]), as_int(stored["n_enqueued"])
            except (KeyError, TypeError, ValueError) as exc:
                raise StateError(
                    f"malformed study attribute {KEY_POPULATION}={preview(stored)}"
                ) from exc
            if size < 2 or not 0 <= n_enqueued <= size:
                raise StateError(f"malformed study attribute {KEY_POPULATION}={preview(stored)}")
            expected = self._population_size(n_enqueued)
            enqueued_now = len(self.enqueued_numbers())
            if size != expected or n_enqueued > enqueued_now:
                raise StateError(
                    f"study attribute {KEY_POPULATION}={preview(stored)} does not fit this "
                    f"sampler and study: with {n_enqueued} start points this sampler makes a "
                    f"population of {expected}, and the study has {enqueued_now} start points. "
                    f"Resume with the settings the study was made with (e.g. "
                    f"EvolverSampler(population_size={size})); a changed value in the database "
                    "is not used"
                )
            return {"size": size, "n_enqueued": n_enqueued}
        n_enqueued = len(self.enqueued_numbers())
        size = self._population_size(n_enqueued)
        if size < 2:
            raise ConfigError(
                f"Evolver needs a population of at least 2 individuals; found {n_enqueued} enqueued "
                "trials. Enqueue the initial points or pass population_size/n_startup_trials."
            )
        value = {"size": size, "n_enqueued": min(n_enqueued, size)}
        self.study._storage.set_study_system_attr(self.study._study_id, KEY_POPULATION, value)
        return value

    def _population_size(self, n_enqueued: int) -> int:
        """The size this sampler gives a population with ``n_enqueued`` start points."""
        s = self.sampler
        if s._population_size is not None:
            return s._population_size
        startup = s._n_startup_trials
        return n_enqueued + (startup if startup is not None else (0 if n_enqueued else 10))

    def next_lineage(self, trial: FrozenTrial) -> Lineage:
        """Index, role and target of a fresh trial."""
        k = bisect.bisect_left(self.cache.fresh, trial.number)  # finished, drawn before it
        busy: list[int] = []
        taken = self.cache.indices  # indices of finished trials, and below, of unfinished ones
        in_flight: set[int] = set()
        for t in self.unfinished:
            lineage = self._lineages[t.number]
            if t.number < trial.number:
                if lineage is not None and lineage.trial == t.number:
                    k += 1
                elif lineage is None and _being_drawn(t):
                    k += 1  # another worker is drawing for it right now: it will take an index
            if t.number != trial.number and lineage is not None:
                in_flight.add(lineage.index)
                if t.state == TrialState.RUNNING:
                    busy.append(lineage.slot)
        while k in taken or k in in_flight:  # a race between workers: never reuse an index
            k += 1
        pop = self.population()
        n_random = pop["size"] - pop["n_enqueued"]
        if k < n_random:
            return Lineage(index=k, role="init", slot=pop["n_enqueued"] + k, trial=trial.number)
        target = choose_target(self.sampler.seed, k - n_random, pop["size"], busy)
        parent = self.best_per_slot(pop["size"])[target]
        return Lineage(
            index=k,
            role="offspring",
            slot=target,
            parent_trial=None if parent is None else parent.number,
            parent_value=None
            if parent is None or parent.value is None
            else parent.value * self.sign,
            trial=trial.number,
        )

    def best_per_slot(self, size: int) -> list[_Record | None]:
        """Greedy selection, order-free: the best finished trial of each slot."""
        best: list[_Record | None] = [None] * size
        for slot, record in self.cache.slot_best.items():
            if slot >= size:
                raise StateError(
                    f"malformed {KEY_LINEAGE} of trial {record.number}: slot {slot} in a "
                    f"population of {size} (expected 0 <= slot < {size})"
                )
            best[slot] = record
        enqueued_slot = {n: i for i, n in enumerate(self.enqueued_numbers()[:size])}
        for record in self.cache.unlinked:  # a start point, or a retry of one (its slot)
            origin = record.number if record.retry_of is None else record.retry_of
            slot = enqueued_slot.get(origin, -1)
            if 0 <= slot < size:
                current = best[slot]
                if current is None or _better(record, current):
                    best[slot] = record
        return best

    def params_for(
        self, lineage: Lineage, space: NumericSpace, config: EvolverConfig
    ) -> tuple[dict[str, Any], Lineage]:
        """The trial's parameters over ``space`` (a random point or an offspring), and the
        lineage completed with the offspring's references."""
        seed = self.sampler.seed
        if lineage.role == "init":
            return space.to_params(
                random_point(seed, lineage.slot, space.lower, space.upper)
            ), lineage
        pop = self.population()
        size = pop["size"]
        best = self.best_per_slot(size)
        cache = self.cache.for_space(space)
        initial = cache.initial.get((size, pop["n_enqueued"]))
        if initial is None:
            initial = cache.initial[size, pop["n_enqueued"]] = self._initial_vectors(
                space, size, pop["n_enqueued"]
            )
        rows = []
        for s, r in enumerate(best):
            if r is not None and r.number not in cache.vectors:  # a record keeps its slot
                cache.vectors[r.number] = space.to_vector(r.params, fill=initial[s])
            rows.append(initial[s] if r is None else cache.vectors[r.number])
        xs = np.array(rows).reshape(size, space.dim)
        values = np.array([np.nan if r is None or r.value is None else r.value for r in best])
        n_random = size - pop["n_enqueued"]
        child = make_offspring(
            lineage.index - n_random,
            lineage.slot,
            xs,
            values,
            space.lower,
            space.upper,
            seed,
            config,
        )
        lineage = replace(lineage, references=child.references, reference_kind=child.reference_kind)
        return space.to_params(child.x), lineage

    def _initial_vectors(self, space: NumericSpace, size: int, n_enqueued: int) -> list[np.ndarray]:
        """Each slot's initial point: the enqueued params, else the seeded random point."""
        by_number = {t.number: t for t in self.trials}
        out = []
        numbers = self.enqueued_numbers()[:n_enqueued]
        for slot in range(size):
            fallback = random_point(self.sampler.seed, slot, space.lower, space.upper)
            if slot < len(numbers):
                t = by_number[numbers[slot]]
                out.append(
                    space.to_vector(t.system_attrs.get("fixed_params", t.params), fill=fallback)
                )
            else:
                out.append(fallback)
        return out


def _is_enqueued(trial: FrozenTrial) -> bool:
    """A user-given point: enqueued (``fixed_params``) or added finished without our lineage."""
    if "failed_trial" in trial.system_attrs:
        return False  # a retry: it belongs to the trial it retries
    return "fixed_params" in trial.system_attrs or (
        trial.state in FINISHED and KEY_LINEAGE not in trial.system_attrs and has_params(trial)
    )


def _retry_of(trial: FrozenTrial) -> int | None:
    """The number of the trial that ``trial`` retries (Optuna's ``failed_trial``: the first
    trial of a chain of retries), or None."""
    origin = trial.system_attrs.get("failed_trial")
    try:
        return None if origin is None else as_int(origin)
    except (TypeError, ValueError):
        raise StateError(f"malformed failed_trial system attribute {preview(origin)}") from None


def _being_drawn(trial: FrozenTrial) -> bool:
    """A trial another worker is drawing parameters for (it will take a fresh index)."""
    return (
        trial.state in (TrialState.RUNNING, TrialState.WAITING)
        and "fixed_params" not in trial.system_attrs
        and not trial.params
    )
