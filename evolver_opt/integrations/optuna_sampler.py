"""``EvolverSampler``: Evolver as an Optuna sampler whose whole state lives in the storage.

Nothing is kept only in memory: the population is derived from the study's trials and their
``evolver:*`` system attributes (JSON), so any process that loads the study continues it.

How trials are read:

* **Initial individuals** are the enqueued trials (``study.enqueue_trial``, e.g. the one-hot
  coefficient vectors of the fine-tuned models and the uniform average), in trial-number order,
  then random points up to ``population_size``.
* Every trial the sampler draws for (a *fresh* trial) gets a fresh index ``k``: the number of
  fresh trials before it. Its random draws come from ``(seed, k)``. A trial re-queued by
  ``RetryHeartbeatStaleTrialCallback`` carries the same params and ``evolver:*`` attributes, so
  it is the same offspring, and ``k`` of later trials does not move: a seeded single-worker study
  that is killed and resumed makes the same parameter sets as an uninterrupted one.
* **Greedy selection is order-free**: individual ``s`` is the best finished trial among its
  initial trial and the offspring that targeted it (ties: the lower trial number). Every worker
  that sees the same finished trials derives the same population, whatever order they
  finished in. FAIL, PRUNED and NaN trials are lost offspring: they never enter it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from evolver_opt.core.evolver import (
    EvolverConfig,
    choose_target,
    make_offspring,
    random_point,
    rng_for,
)
from evolver_opt.errors import ConfigError, StateError
from evolver_opt.integrations._space import NumericSpace, name_salt, random_value

_logger = optuna.logging.get_logger(__name__)

PREFIX = "evolver:"
# One trial system attribute holds a trial's whole lineage, written in one call, so that no
# reader ever sees half of it.
KEY_LINEAGE = PREFIX + "lineage"
KEY_POPULATION = PREFIX + "population"  # study system attr: {"size": P, "n_enqueued": E}

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_STREAM_NAMED = 3  # per-parameter draws (random initial points, params outside the space)


@dataclass(frozen=True)
class Lineage:
    """What the sampler decided for one trial (also stored as ``evolver:*`` system attrs)."""

    index: int
    role: str  # "init" or "offspring"
    slot: int
    references: tuple[int, ...] = ()
    reference_kind: str | None = None
    parent_trial: int | None = None
    parent_value: float | None = None
    trial: int = -1  # number of the trial it was drawn for (a retry keeps the original's)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> Lineage | None:
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
                index=_as_int(raw["index"]),
                role=role,
                slot=_as_int(raw["slot"]),
                references=tuple(_as_int(r) for r in raw.get("references", ())),
                reference_kind=raw.get("reference_kind"),
                parent_trial=None if parent_trial is None else _as_int(parent_trial),
                parent_value=None if parent_value is None else float(parent_value),
                trial=_as_int(raw["trial"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(
                f"malformed {KEY_LINEAGE} system attribute {_preview(raw)}: {type(exc).__name__}: {exc}"
            ) from exc

    def to_attr(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "index": self.index,
            "role": self.role,
            "slot": self.slot,
            "references": list(self.references),
            "reference_kind": self.reference_kind,
            "parent_trial": self.parent_trial,
            "parent_value": self.parent_value,
        }


def offspring_info(trial: optuna.trial.BaseTrial | FrozenTrial) -> Lineage | None:
    """The lineage of ``trial`` (role, target slot, parent value) if EvolverSampler drew it.

    The objective uses ``parent_value`` for exact racing: an offspring only has to beat it.
    """
    if isinstance(trial, FrozenTrial):
        attrs = trial.system_attrs
    else:
        attrs = trial.study._storage.get_trial_system_attrs(trial._trial_id)  # type: ignore[attr-defined]
    return Lineage.from_attrs(attrs)


class EvolverSampler(BaseSampler):
    """Evolver (Du et al., ACL Findings 2024) as a steady-state Optuna sampler.

    Args:
        population_size: number of individuals. ``None``: the enqueued trials found when the
            first trial is drawn, plus ``n_startup_trials`` random ones (10 if nothing is enqueued).
        n_startup_trials: random initial individuals added to the enqueued ones (only without
            ``population_size``).
        mutation: ``"interpolate"`` (``(1-F) x_i + F x_r``, the released code) or ``"de"``.
        F: interpolation weight (or DE scale).
        CR: binomial crossover rate.
        p_random: probability of a random reference (else the best other individual);
            ``None`` with ``n_generations`` uses the released schedule ``0.5/(G-g) + 0.5``.
        n_generations: ``G`` for that schedule.
        bound_handling: ``"clip"`` or ``"reflect"``.
        seed: seed of every draw. ``None`` picks one at random (no exact resume).
        independent_sampler: for non-numeric parameters (default: ``RandomSampler(seed)``).
        warn_independent_sampling: warn once when a parameter goes to ``independent_sampler``.

    Example::

        sampler = EvolverSampler(seed=0)
        study = optuna.create_study(direction="maximize", sampler=sampler, storage="sqlite:///s.db")
        for i in range(3):  # each fine-tuned model alone, then the uniform average
            study.enqueue_trial({f"w{j}": float(i == j) for j in range(3)})
        study.enqueue_trial({f"w{j}": 1 / 3 for j in range(3)})
        study.optimize(objective, n_trials=100)
    """

    def __init__(
        self,
        *,
        population_size: int | None = None,
        n_startup_trials: int | None = None,
        mutation: str = "interpolate",
        F: float = 0.5,
        CR: float = 0.5,
        p_random: float | None = 0.5,
        n_generations: int | None = None,
        bound_handling: str = "clip",
        seed: int | None = None,
        independent_sampler: BaseSampler | None = None,
        warn_independent_sampling: bool = True,
    ) -> None:
        if population_size is not None and n_startup_trials is not None:
            raise ValueError(
                "pass population_size or n_startup_trials, not both "
                f"(got {population_size!r} and {n_startup_trials!r})"
            )
        if population_size is not None and population_size < 2:
            raise ValueError(f"population_size={population_size!r} is invalid: expected >= 2")
        if n_startup_trials is not None and n_startup_trials < 0:
            raise ValueError(f"n_startup_trials={n_startup_trials!r} is invalid: expected >= 0")
        if mutation == "de" and population_size is not None and population_size < 4:
            raise ValueError(f"mutation='de' needs population_size >= 4, got {population_size}")
        if seed is not None and (not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed={seed!r} is invalid: expected None or a non-negative int")
        try:
            self._config = EvolverConfig(
                F=F,
                CR=CR,
                mutation=mutation,
                p_random=p_random,  # type: ignore[arg-type]
                n_generations=n_generations,
                bound_handling=bound_handling,  # type: ignore[arg-type]
            )
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        self._population_size = population_size
        self._n_startup_trials = n_startup_trials
        self._seed = seed if seed is not None else int(np.random.SeedSequence().entropy % 2**63)
        self._independent = independent_sampler or RandomSampler(seed=self._seed)
        self._warn_independent = warn_independent_sampling
        self._warned = False
        self._search_space = IntersectionSearchSpace(include_pruned=True)
        self._lock = threading.RLock()
        self._decisions: dict[int, tuple[Lineage, dict[str, Any]]] = {}  # trial_id -> decision
        self._caches: dict[tuple[int, int], _StudyCache] = {}

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def config(self) -> EvolverConfig:
        return self._config

    def reseed_rng(self) -> None:
        # Our draws are keyed on (seed, k); reseeding them would break exact resume.
        self._independent.reseed_rng()

    # ----------------------------------------------------------------- BaseSampler API
    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        space = self._search_space.calculate(study, use_cache=True)
        return {
            k: d for k, d in space.items() if isinstance(d, FloatDistribution) and not d.single()
        }

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        _check_single_objective(study)
        if not search_space:
            return {}
        lineage, params = self._decide(study, trial, search_space)
        out = {}
        for name, distribution in search_space.items():
            out[name] = (
                params[name] if name in params else self._named_draw(lineage, name, distribution)
            )
        return out

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        _check_single_objective(study)
        if isinstance(param_distribution, FloatDistribution):
            lineage, _ = self._decide(study, trial, {})
            return self._named_draw(lineage, param_name, param_distribution)
        if self._warn_independent and not self._warned:
            self._warned = True
            _logger.warning(
                f"EvolverSampler evolves float parameters only; parameter '{param_name}' "
                f"({type(param_distribution).__name__}) is sampled by "
                f"{type(self._independent).__name__}. Further warnings are suppressed."
            )
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def _named_draw(self, lineage: Lineage, name: str, distribution: BaseDistribution) -> Any:
        """A uniform draw for one parameter outside the evolved vector, keyed on (seed, k, name)."""
        rng = rng_for(self._seed, _STREAM_NAMED, lineage.index * 2**32 + name_salt(name))
        return random_value(distribution, rng)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._independent.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        with self._lock:
            self._decisions.pop(trial._trial_id, None)
        self._independent.after_trial(study, trial, state, values)

    # ----------------------------------------------------------------- the decision
    def _decide(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> tuple[Lineage, dict[str, Any]]:
        """Lineage and relative params of a fresh trial, decided once and written to storage."""
        with self._lock:
            cached = self._decisions.get(trial._trial_id)
            if cached is not None and set(search_space) <= set(cached[1]):
                return cached
            trials = study._get_trials(deepcopy=False, use_cache=True)
            view = self._view(study, trials)
            space = NumericSpace(search_space)
            lineage = cached[0] if cached is not None else Lineage.from_attrs(trial.system_attrs)
            fresh = lineage is None
            if lineage is None:
                lineage = view.next_lineage(trial)
            params, lineage = view.params_for(lineage, space, self._config)
            if fresh:  # store the decision, so that every process (and a retry) sees it
                study._storage.set_trial_system_attr(
                    trial._trial_id, KEY_LINEAGE, lineage.to_attr()
                )
            self._decisions[trial._trial_id] = (lineage, params)
            return lineage, params

    def _view(self, study: Study, trials: list[FrozenTrial]) -> _PopulationView:
        """The population as the finished trials define it, plus what is in flight."""
        key = (id(study._storage), study._study_id)
        cache = self._caches.get(key)
        if cache is None or cache.storage is not study._storage:
            cache = self._caches[key] = _StudyCache(study._storage)
        sign = 1.0 if study.direction == StudyDirection.MINIMIZE else -1.0
        for t in trials:
            if t.state in _FINISHED and t.number not in cache.finished:
                cache.finished[t.number] = _Record.of(t, sign)
        return _PopulationView(self, study, trials, sign, cache)

    def population_info(self, study: Study) -> dict[str, Any]:
        """The current population for reports: per slot, the trial number and value."""
        with self._lock:
            view = self._view(study, study._get_trials(deepcopy=False))
            size = view.population()["size"]
            best = view.best_per_slot(size)
            return {
                "size": size,
                "slots": [
                    {
                        "slot": s,
                        "trial": r.number if r else None,
                        "value": None if r is None else r.value * view.sign,
                    }
                    for s, r in enumerate(best)
                ],
            }


class _StudyCache:
    """What this process derived from one study: finished trials never change, so their
    records are computed once; the population size is fixed once stored."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage  # keeps the storage alive, so its id() stays unique
        self.finished: dict[int, _Record] = {}
        self.population: dict[str, int] | None = None


@dataclass(frozen=True)
class _Record:
    """A finished trial as the population sees it (value in minimization form)."""

    number: int
    lineage: Lineage | None
    enqueued: bool
    value: float | None  # None: lost (FAIL, PRUNED, NaN)
    params: dict[str, Any]

    @classmethod
    def of(cls, trial: FrozenTrial, sign: float) -> _Record:
        value = trial.value if trial.state == TrialState.COMPLETE else None
        ok = value is not None and math.isfinite(value)
        return cls(
            number=trial.number,
            lineage=Lineage.from_attrs(trial.system_attrs),
            enqueued=_is_enqueued(trial),
            value=sign * value if ok else None,  # type: ignore[operator]
            params=trial.params,
        )


class _PopulationView:
    """Population derived from a snapshot of the study's trials."""

    def __init__(
        self,
        sampler: EvolverSampler,
        study: Study,
        trials: list[FrozenTrial],
        sign: float,
        cache: _StudyCache,
    ) -> None:
        self.sampler = sampler
        self.study = study
        self.trials = trials
        self.sign = sign
        self.cache = cache
        self.finished = cache.finished
        self._lineages = {t.number: self._parse_lineage(t) for t in trials}
        self._enqueued = [
            t.number for t in trials if _is_enqueued(t) and self._lineages[t.number] is None
        ]

    def _parse_lineage(self, t: FrozenTrial) -> Lineage | None:
        record = self.finished.get(t.number)
        return record.lineage if record is not None else Lineage.from_attrs(t.system_attrs)

    def _lineage(self, t: FrozenTrial) -> Lineage | None:
        return self._lineages[t.number]

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
                size, n_enqueued = _as_int(stored["size"]), _as_int(stored["n_enqueued"])
            except (KeyError, TypeError, ValueError) as exc:
                raise StateError(
                    f"malformed study attribute {KEY_POPULATION}={_preview(stored)}"
                ) from exc
            if size < 2 or not 0 <= n_enqueued <= size:
                raise StateError(f"malformed study attribute {KEY_POPULATION}={_preview(stored)}")
            return {"size": size, "n_enqueued": n_enqueued}
        s = self.sampler
        n_enqueued = len(self.enqueued_numbers())
        if s._population_size is not None:
            size = s._population_size
        else:
            size = n_enqueued + (
                s._n_startup_trials
                if s._n_startup_trials is not None
                else (0 if n_enqueued else 10)
            )
        if size < 2:
            raise ConfigError(
                f"Evolver needs a population of at least 2 individuals; found {n_enqueued} enqueued "
                "trials. Enqueue the initial points or pass population_size/n_startup_trials."
            )
        value = {"size": size, "n_enqueued": min(n_enqueued, size)}
        self.study._storage.set_study_system_attr(self.study._study_id, KEY_POPULATION, value)
        return value

    def next_lineage(self, trial: FrozenTrial) -> Lineage:
        """Index, role and target of a fresh trial."""
        k = 0
        busy: list[int] = []
        for t in self.trials:
            lineage = self._lineage(t)
            if t.number < trial.number:
                if lineage is not None and lineage.trial == t.number:
                    k += 1
                elif lineage is None and _being_drawn(t):
                    k += 1  # another worker is drawing for it right now: it will take an index
            if t.state == TrialState.RUNNING and t.number != trial.number and lineage is not None:
                busy.append(lineage.slot)
        taken = {
            lineage.index
            for number, lineage in self._lineages.items()
            if lineage is not None and number != trial.number
        }
        while k in taken:  # a race between workers: never reuse an index (same draws)
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
        enqueued_slot = {n: i for i, n in enumerate(self.enqueued_numbers()[:size])}
        for record in self.finished.values():
            if record.lineage is not None:
                slot = record.lineage.slot
            else:
                slot = enqueued_slot.get(record.number, -1)
            if not 0 <= slot < size or record.value is None:
                continue
            current = best[slot]
            if current is None or (record.value, record.number) < (current.value, current.number):  # type: ignore[operator]
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
        initial = self._initial_vectors(space, size, pop["n_enqueued"])
        xs = np.array(
            [
                initial[s] if r is None else space.to_vector(r.params, fill=initial[s])
                for s, r in enumerate(best)
            ]
        ).reshape(size, space.dim)
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
        trial.state in _FINISHED and KEY_LINEAGE not in trial.system_attrs and bool(trial.params)
    )


def _being_drawn(trial: FrozenTrial) -> bool:
    """A trial another worker is drawing parameters for (it will take a fresh index)."""
    return (
        trial.state in (TrialState.RUNNING, TrialState.WAITING)
        and "fixed_params" not in trial.system_attrs
        and not trial.params
    )


def _check_single_objective(study: Study) -> None:
    if study._is_multi_objective():
        raise ValueError("EvolverSampler supports single-objective studies only")


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
