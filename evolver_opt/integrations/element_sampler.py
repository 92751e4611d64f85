"""``ElementEvolverSampler``: weight-space Evolver as an Optuna sampler that writes lineage only.

A weight-space genome (every scalar of every model) is far too large for trial parameters, so
this sampler suggests no parameters at all: in ``before_trial`` it decides the trial's lineage
(target, reference, ``F``, ``CR``, mask seed, the trials they come from) and writes it as one
JSON trial system attribute, ``evolver:element``. The objective
(``evolver_opt.search.element``) rebuilds the weights by replaying accepted offspring.

* **Initial population**: the enqueued trials (each fine-tuned model alone, static merges), in
  trial-number order; their numbers are fixed in the study system attribute
  ``evolver:element_study`` on first use. Their parameters are the coefficients of the merge
  engine and the objective evaluates them like any coefficient trial.
* **State lives in storage**: the population is :func:`~evolver_opt.core.weight_evolution.replay`
  of the finished trials, so a new process (or a resumed study) continues where it stopped.
  Draws of the ``k``-th fresh decision come from ``(seed, k)``; a retried trial keeps its lineage.
* **Several workers**: no barrier; a target that a running offspring holds is avoided when
  another is free. An offspring whose parent (merger mode: whose population) was replaced
  while it ran is a lost offspring.

No torch here, and nothing is pickled.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from evolver_opt.core.config import EvolverConfig
from evolver_opt.core.weight_evolution import (
    KEY_ELEMENT,
    KEY_ELEMENT_STUDY,
    MODES,
    ElementLineage,
    Mode,
    Population,
    TrialRecord,
    decide,
    replay,
)
from evolver_opt.errors import ConfigError, StateError
from evolver_opt.integrations._base import SeededSampler, evolver_config, resolve_seed
from evolver_opt.integrations._population import is_start_point

__all__ = [
    "KEY_ELEMENT",
    "KEY_ELEMENT_STUDY",
    "ElementEvolverSampler",
    "element_lineage",
    "element_population",
    "element_records",
]

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def element_lineage(trial: FrozenTrial | optuna.trial.BaseTrial) -> ElementLineage | None:
    """The weight-space lineage of ``trial`` (None if the sampler has not decided it)."""
    if isinstance(trial, FrozenTrial):
        attrs = trial.system_attrs
    else:
        attrs = trial.study._storage.get_trial_system_attrs(trial._trial_id)  # type: ignore[attr-defined]
    raw = attrs.get(KEY_ELEMENT)
    return None if raw is None else ElementLineage.from_attr(raw)


def element_records(trials: Sequence[FrozenTrial]) -> list[TrialRecord]:
    """The trials as replay sees them: completion order, finite COMPLETE values, lineage."""
    out = []
    for t in trials:
        value = t.value if t.state == TrialState.COMPLETE else None
        ok = value is not None and math.isfinite(value)
        done = (
            t.datetime_complete.isoformat(timespec="microseconds")
            if t.datetime_complete is not None
            else ""
        )
        out.append(
            TrialRecord(
                number=t.number,
                finished=t.state in _FINISHED,
                value=float(value) if ok else None,  # type: ignore[arg-type]
                order=(done, t.number),
                lineage=None
                if (lineage := element_lineage(t)) is None
                else lineage.check(t.number),
            )
        )
    return out


def read_study_info(study: Study) -> dict[str, Any] | None:
    """``{"mode": ..., "init": [trial numbers]}`` as stored, or None before the first trial."""
    raw = study._storage.get_study_system_attrs(study._study_id).get(KEY_ELEMENT_STUDY)
    if raw is None:
        return None
    try:
        info = {"mode": str(raw["mode"]), "init": [int(n) for n in raw["init"]]}
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"malformed study attribute {KEY_ELEMENT_STUDY}={raw!r}") from exc
    if info["mode"] not in MODES or len(info["init"]) < 2:
        raise StateError(f"malformed study attribute {KEY_ELEMENT_STUDY}={raw!r}")
    return info


def element_population(study: Study, trials: Sequence[FrozenTrial] | None = None) -> Population:
    """The population that the study's finished trials define (for objectives and reports)."""
    info = read_study_info(study)
    if info is None:
        raise StateError(
            f"study {study.study_name!r} has no {KEY_ELEMENT_STUDY} attribute: no weight-space "
            "trial has been drawn in it (is its sampler ElementEvolverSampler?)"
        )
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    return replay(info["mode"], info["init"], element_records(trials))  # type: ignore[arg-type]


class ElementEvolverSampler(SeededSampler, BaseSampler):
    """Weight-space Evolver (the released code's form) as an Optuna sampler; writes lineage.

    Args:
        mode: ``"plain"`` (fitness = the offspring's dev score) or ``"merger"`` (fitness = the
            dev score of the population merged with the offspring in its target's place).
        F: interpolation weight of the reference, ``0 < F <= 1``.
        CR: probability that a scalar comes from the mutant.
        p_random: probability of a random reference (else the best other individual; merger
            mode always draws at random); ``None`` with ``n_generations`` uses ``0.5/(G-g)+0.5``.
        n_generations: ``G`` for that schedule.
        seed: seed of every draw; ``None`` picks one (no exact resume).

    The study must maximize and must enqueue at least two initial points before the first
    trial; the objective must be ``evolver_opt.search.element.ElementObjective``.
    """

    def __init__(
        self,
        *,
        mode: str = "plain",
        F: float = EvolverConfig.F,  # the defaults are EvolverConfig's: declared once there
        CR: float = EvolverConfig.CR,
        p_random: float | None = EvolverConfig.p_random,
        n_generations: int | None = EvolverConfig.n_generations,
        seed: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is invalid: expected one of {list(MODES)}")
        if not 0.0 < F <= 1.0:
            raise ValueError(f"F={F!r} is invalid: weight-space interpolation needs 0 < F <= 1")
        self._config = evolver_config(F=F, CR=CR, p_random=p_random, n_generations=n_generations)
        self._mode: Mode = mode  # type: ignore[assignment]
        self._seed = resolve_seed(seed)
        self._random = RandomSampler(seed=self._seed)
        self._lock = threading.RLock()

    @property
    def mode(self) -> Mode:
        return self._mode

    def reseed_rng(self) -> None:  # our draws are keyed on (seed, k); nothing to reseed
        self._random.reseed_rng()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        lineage = element_lineage(trial)
        role = None if lineage is None else lineage.role
        raise ValueError(
            f"ElementEvolverSampler suggests no parameters, but trial {trial.number} ({role}) "
            f"asked for {param_name!r}: only enqueued initial points have parameters "
            "(the weight-space objective suggests nothing for offspring)"
        )

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if study._is_multi_objective() or study.direction != StudyDirection.MAXIMIZE:
            raise ValueError("ElementEvolverSampler needs a single-objective maximizing study")
        if KEY_ELEMENT in trial.system_attrs:  # a retry keeps the original's lineage
            return
        with self._lock:
            trials = study.get_trials(deepcopy=False)
            info = self._study_info(study, trials)
            init = info["init"]
            if trial.number in init:
                lineage = ElementLineage(
                    index=-1, role="init", trial=trial.number, slot=init.index(trial.number)
                )
            else:
                lineage = self._decide(trials, trial, info)
            study._storage.set_trial_system_attr(trial._trial_id, KEY_ELEMENT, lineage.to_attr())

    def _study_info(self, study: Study, trials: Sequence[FrozenTrial]) -> dict[str, Any]:
        info = read_study_info(study)
        if info is None:
            init = sorted(t.number for t in trials if is_start_point(t))
            if len(init) < 2:
                raise ConfigError(
                    "weight-space Evolver needs at least 2 enqueued initial points (each "
                    f"fine-tuned model alone); the study has {len(init)}"
                )
            info = {"mode": self._mode, "init": init}
            study._storage.set_study_system_attr(study._study_id, KEY_ELEMENT_STUDY, info)
        if info["mode"] != self._mode:
            raise ConfigError(
                f"study {study.study_name!r} evolves in mode {info['mode']!r}; this sampler's "
                f"mode is {self._mode!r}"
            )
        return info

    def _decide(
        self, trials: Sequence[FrozenTrial], trial: FrozenTrial, info: dict[str, Any]
    ) -> ElementLineage:
        records = element_records(trials)
        population = replay(self._mode, info["init"], records)
        init = set(info["init"])
        taken: set[int] = set()
        k = 0
        busy: list[int] = []
        population_trial = False
        for r in records:
            lineage = r.lineage
            if r.number == trial.number or r.number in init:
                continue
            if lineage is None:
                if not r.finished and r.number < trial.number:
                    k += 1  # another worker is deciding it right now: it will take an index
                continue
            if lineage.role == "init":
                continue
            taken.add(lineage.index)
            if lineage.trial == r.number and r.number < trial.number:
                k += 1
            if lineage.role == "population" and (not r.finished or r.value is not None):
                population_trial = True
            if lineage.role == "offspring" and not r.finished and lineage.slot is not None:
                busy.append(lineage.slot)
        while k in taken:  # a race between workers: never reuse an index (same draws)
            k += 1
        return decide(
            mode=self._mode,
            index=k,
            trial=trial.number,
            population=population,
            busy=busy,
            population_trial_exists=population_trial,
            seed=self._seed,
            config=self._config,
        )
