"""EvolverSampler's view of a study: its trials as ``core.population`` records, and a memo.

The population itself is :mod:`evolver_opt.core.population`'s pure functions of the records;
this module turns Optuna trials into records (a finished trial never changes, so its record is
made once per process) and reads or fixes the population's size in a study attribute.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from evolver_opt.core import population as core
from evolver_opt.core.config import EvolverConfig
from evolver_opt.core.operators import adapted, initial_point, make_offspring
from evolver_opt.core.population import (
    KEY_LINEAGE,
    KEY_POPULATION,
    Lineage,
    Record,
    as_int,
    preview,
)
from evolver_opt.errors import ConfigError, StateError
from evolver_opt.integrations._space import NumericSpace

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def has_params(trial: FrozenTrial) -> bool:
    """Whether ``trial`` has parameters, without reading them where a trial class loads them
    lazily: such a class (``runtime.lazy_params.LazyParamsTrial``) sets ``always_has_params``."""
    return getattr(trial, "always_has_params", False) or bool(trial.params)


def record_of(trial: FrozenTrial, sign: float, tie_break: str | None = None) -> Record:
    """``trial`` as a population record (``sign``: +1 minimize, -1 maximize)."""
    finished = trial.state in FINISHED
    value = trial.value if trial.state == TrialState.COMPLETE else None
    ok = value is not None and math.isfinite(value)
    attrs = trial.system_attrs
    lineage = Lineage.from_attrs(attrs)
    retry_of = _retry_of(trial)
    return Record(
        number=trial.number,
        finished=finished,
        value=sign * value if ok else None,  # type: ignore[operator]
        lineage=lineage,
        start_point=is_start_point(trial),
        retry_of=retry_of,
        secondary=_secondary(trial, sign, tie_break),
        running=trial.state == TrialState.RUNNING,
        drawing=not finished and lineage is None and _being_drawn(trial),
        source=trial,
    )


def is_start_point(trial: FrozenTrial) -> bool:
    """Whether ``trial`` is a start point the user gave (see ``core.population``)."""
    attrs = trial.system_attrs
    finished = trial.state in FINISHED
    return core.is_start_point(
        retry="failed_trial" in attrs,
        enqueued="fixed_params" in attrs,
        finished=finished,
        drawn=KEY_LINEAGE in attrs,
        params=finished and KEY_LINEAGE not in attrs and has_params(trial),
    )


class StudyCache:
    """What this process keeps of one study between asks: its finished trials folded into a
    ``core.population.Finished`` (each once: a finished trial never changes), the selection
    so far, the population's size and the start points' vectors."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage  # keeps the storage alive, so its id() stays unique
        self.finished = core.Finished()
        self.numbers: set[int] = set()  # the trials folded into ``finished``
        self._seen = 0  # trials numbered below this have been looked at ...
        self._open: set[int] = set()  # ... and of those, these were unfinished then
        self._unselected: list[Record] = []  # finished with a value, not yet in ``selection``
        # greedy selection so far: (start points, the best record per slot)
        self.selection: tuple[tuple[int, ...], list[Record | None]] | None = None
        self.population: dict[str, int] | None = None
        self._space_key: tuple | None = None
        self.vectors: dict[int, np.ndarray] = {}  # trial number -> its vector over the space
        self.initial: dict[tuple[int, int], list[np.ndarray]] = {}  # (size, n_enqueued) -> rows

    def update(
        self, trials: list[FrozenTrial], sign: float, tie_break: str | None = None
    ) -> list[Record]:
        """Fold in the trials finished since the last call; returns the unfinished ones as
        records. ``trials`` may be an older snapshot than an earlier call's (threads of one
        process each read their own): what it does not show is looked at next time."""
        n = len(trials)
        if trials and trials[-1].number == n - 1:  # numbered 0..n-1, as Optuna does
            look = [trials[k] for k in sorted(self._open) if k < n] + trials[self._seen :]
            self._seen = max(self._seen, n)
        else:  # a filtered study (some pruners pass one): look at every trial
            look = [t for t in trials if t.number not in self.numbers]
        self._open.difference_update(t.number for t in look)
        unfinished = []
        for t in look:
            if t.number in self.numbers:
                continue
            record = record_of(t, sign, tie_break)
            if not record.finished:
                self._open.add(t.number)
                unfinished.append(record)
                continue
            self.finished.add(record)
            self.numbers.add(record.number)
            if record.value is not None:
                self._unselected.append(record)
        return unfinished

    def best_per_slot(self, start_points: list[int], size: int) -> list[Record | None]:
        """``core.population.select`` of the finished records, folding in only those that
        finished since the last call (other start points start over)."""
        starts = tuple(start_points[:size])
        if self.selection is None or self.selection[0] != starts or len(self.selection[1]) != size:
            self.selection = (starts, [None] * size)
            self._unselected = list(self.finished.valued)
        start_slot = {n: s for s, n in enumerate(starts)}
        best = self.selection[1]
        try:
            core.fold_into(best, self._unselected, start_slot)
        except StateError:
            self.selection = None  # half folded: start over next time (and raise again)
            raise
        self._unselected = []
        return best

    def for_space(self, space: NumericSpace) -> StudyCache:
        """Drops the vectors computed over another search space."""
        if space.key != self._space_key:
            self._space_key = space.key
            self.vectors.clear()
            self.initial.clear()
        return self


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
    """One ask's records of a study, and what the sampler derives from them."""

    def __init__(
        self,
        study: Study,
        trials: list[FrozenTrial],
        cache: StudyCache,
        *,
        seed: int,
        size_rule: tuple[int | None, int | None],
        tie_break: str | None,
    ) -> None:
        self.study = study
        self.trials = trials
        self.sign = 1.0 if study.direction == StudyDirection.MINIMIZE else -1.0
        self.cache = cache
        self.seed = seed
        self.size_rule = size_rule  # (population_size, n_startup_trials) of the sampler
        self.unfinished = cache.update(trials, self.sign, tie_break)
        self._enqueued = core.start_points(cache.finished, self.unfinished)

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
        return core.population_size(n_enqueued, *self.size_rule)

    def next_lineage(self, trial: FrozenTrial) -> Lineage:
        """Index, role and target of a fresh trial."""
        pop = self.population()
        return core.next_lineage(
            self.cache.finished,
            self.unfinished,
            trial.number,
            size=pop["size"],
            n_enqueued=pop["n_enqueued"],
            seed=self.seed,
            sign=self.sign,
            best=self.best_per_slot(pop["size"], before=trial.number),
        )

    def best_per_slot(self, size: int, before: int | None = None) -> list[Record | None]:
        """Greedy selection, order-free: the best finished trial of each slot (a copy). With
        ``before``, of the trials numbered below it only: another thread's newer snapshot may
        have folded in trials that finished after trial ``before`` was created, and a lineage
        names only earlier trials."""
        best = list(self.cache.best_per_slot(self._enqueued, size))
        if before is not None and any(r is not None and r.number >= before for r in best):
            earlier = [r for r in self.cache.finished.valued if r.number < before]
            best = core.select(earlier, self._enqueued, size)
        return best

    def params_for(
        self, lineage: Lineage, space: NumericSpace, config: EvolverConfig
    ) -> tuple[dict[str, Any], Lineage]:
        """The trial's parameters over ``space`` (a random point or an offspring), and the
        lineage completed with the offspring's references."""
        seed = self.seed
        pop = self.population()
        size = pop["size"]
        cache = self.cache.for_space(space)
        initial = cache.initial.get((size, pop["n_enqueued"]))
        if initial is None:
            initial = cache.initial[size, pop["n_enqueued"]] = self._initial_vectors(
                space, size, pop["n_enqueued"], config
            )
        if lineage.role == "init":
            return space.to_params(initial[lineage.slot]), lineage
        best = self.best_per_slot(size, before=lineage.trial)
        rows = [initial[s] if r is None else self._vector(r, space, initial[s])
                for s, r in enumerate(best)]  # fmt: skip
        xs = np.array(rows).reshape(size, space.dim)
        values = np.array([np.nan if r is None or r.value is None else r.value for r in best])
        archive = None
        if config.mutation == "pbest":
            earlier = [r for r in self.cache.finished.valued if r.number < lineage.trial]
            replaced = core.replaced_parents(earlier, self._enqueued, size, limit=size)
            slot = core.slot_of
            start_slot = {n: s for s, n in enumerate(self._enqueued[:size])}
            archive = np.array(
                [self._vector(r, space, initial[slot(r, start_slot) or 0]) for r in replaced]
            ).reshape(len(replaced), space.dim)
        n_random = size - pop["n_enqueued"]
        k = lineage.index - n_random
        parent = best[lineage.slot]
        inherited = None if parent is None else _rates(parent.lineage)
        F, CR = adapted(seed, k, inherited, config)
        child = make_offspring(
            k, lineage.slot, xs, values, space.lower, space.upper, seed, config,
            F=F, CR=CR, archive=archive,
        )  # fmt: skip
        lineage = replace(lineage, references=child.references, reference_kind=child.reference_kind)
        if config.adapt != "none":
            lineage = replace(lineage, F=F, CR=CR)
        return space.to_params(child.x), lineage

    def _vector(self, record: Record, space: NumericSpace, fill: np.ndarray) -> np.ndarray:
        """A finished record's point over ``space`` (memoized: a record never changes)."""
        vectors = self.cache.for_space(space).vectors
        if record.number not in vectors:
            vectors[record.number] = space.to_vector(record.source.params, fill=fill)
        return vectors[record.number]

    def _initial_vectors(
        self, space: NumericSpace, size: int, n_enqueued: int, config: EvolverConfig
    ) -> list[np.ndarray]:
        """Each slot's initial point: the enqueued params, else the seeded random (or, with
        ``init="perturbed"``, perturbed start) point."""
        by_number = {t.number: t for t in self.trials}
        numbers = self.enqueued_numbers()[:n_enqueued]
        starts = []
        for slot, number in enumerate(numbers):
            t = by_number[number]
            fallback = initial_point(
                self.seed, slot, np.zeros((0, space.dim)), space.lower, space.upper, config
            )
            starts.append(
                space.to_vector(t.system_attrs.get("fixed_params", t.params), fill=fallback)
            )
        given = np.array(starts).reshape(len(starts), space.dim)
        return starts + [
            initial_point(self.seed, slot, given, space.lower, space.upper, config)
            for slot in range(len(starts), size)
        ]


def _rates(lineage: Lineage | None) -> tuple[float, float] | None:
    """A self-adaptive individual's (F, CR), None for a start point or a plain offspring."""
    if lineage is None or lineage.F is None or lineage.CR is None:
        return None
    return lineage.F, lineage.CR


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
