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

import threading
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from evolver_opt.core.config import EvolverConfig, rng_for
from evolver_opt.core.population import KEY_LINEAGE, KEY_POPULATION, Lineage, Record
from evolver_opt.integrations._base import (
    FloatSpaceSampler,
    SeededSampler,
    declare_hyperparameters,
    evolver_config,
    per_study,
    resolve_seed,
)
from evolver_opt.integrations._population import PopulationView, StudyCache, record_of
from evolver_opt.integrations._space import NumericSpace, name_salt, random_value
from evolver_opt.integrations.trial_attrs import offspring_info, parent_value

__all__ = [
    "KEY_LINEAGE",
    "KEY_POPULATION",
    "EvolverSampler",
    "Lineage",
    "offspring_info",
    "parent_value",
    "trial_records",
]

_logger = optuna.logging.get_logger(__name__)
_STREAM_NAMED = 3  # per-parameter draws (random initial points, params outside the space)


def trial_records(
    study: Study, trials: Sequence[FrozenTrial] | None = None, tie_break: str | None = None
) -> list[Record]:
    """``trials`` (default: the study's) as ``core.population`` records, values in
    minimization form: what :class:`EvolverSampler` derives its population from."""
    sign = 1.0 if study.direction == StudyDirection.MINIMIZE else -1.0
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    return [record_of(t, sign, tie_break) for t in trials]


class EvolverSampler(SeededSampler, FloatSpaceSampler):
    """Evolver (Du et al., ACL Findings 2024) as a steady-state Optuna sampler.

    Args:
        population_size: number of individuals. ``None``: the enqueued trials found when the
            first trial is drawn, plus ``n_startup_trials`` random ones (10 if nothing is enqueued).
        n_startup_trials: random initial individuals added to the enqueued ones (only without
            ``population_size``).
        config: Evolver's hyperparameters (:class:`~evolver_opt.core.config.EvolverConfig`:
            mutation, F, CR, p_random, n_generations, bound_handling, adapt, p_best, restart,
            init; their meaning is documented there). Default: ``EvolverConfig()``.
        **hyperparameters: any of those fields by name (``F=0.3``), replacing ``config``'s.
        tie_break: a trial user attribute that orders trials of equal value in greedy
            selection (better in the objective's direction; e.g. ``"dev_logprob"``, the mean
            log-probability of the right label beside accuracy). ``None``: the earlier trial.
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

    _draws_floats = True  # a float outside the vector gets a draw keyed on (seed, k, name)

    @declare_hyperparameters
    def __init__(
        self,
        *,
        population_size: int | None = None,
        n_startup_trials: int | None = None,
        config: EvolverConfig | None = None,
        tie_break: str | None = None,
        seed: int | None = None,
        independent_sampler: BaseSampler | None = None,
        warn_independent_sampling: bool = True,
        **hyperparameters: Any,
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
        self._config = evolver_config(config, **hyperparameters)
        if self._config.mutation == "de" and population_size is not None and population_size < 4:
            raise ValueError(f"mutation='de' needs population_size >= 4, got {population_size}")
        self._seed = resolve_seed(seed)
        if tie_break is not None and (not isinstance(tie_break, str) or not tie_break):
            raise ValueError(f"tie_break={tie_break!r} is invalid: expected a user attribute name")
        self.tie_break = tie_break
        self._population_size = population_size
        self._n_startup_trials = n_startup_trials
        super().__init__(
            independent_sampler or RandomSampler(seed=self._seed), warn_independent_sampling
        )
        self._lock = threading.RLock()
        self._decisions: dict[int, tuple[Lineage, dict[str, Any]]] = {}  # trial_id -> decision
        self._caches: dict[tuple[int, int], StudyCache] = {}

    def _sample_space(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        lineage, params = self._decide(study, trial, search_space)
        out = {}
        for name, distribution in search_space.items():
            out[name] = (
                params[name] if name in params else self._named_draw(lineage, name, distribution)
            )
        return out

    def _sample_float(
        self, study: Study, trial: FrozenTrial, name: str, distribution: FloatDistribution
    ) -> float:
        lineage, _ = self._decide(study, trial, {})
        return self._named_draw(lineage, name, distribution)

    def _named_draw(self, lineage: Lineage, name: str, distribution: BaseDistribution) -> Any:
        """A uniform draw for one parameter outside the evolved vector, keyed on (seed, k, name)."""
        rng = rng_for(self._seed, _STREAM_NAMED, lineage.index * 2**32 + name_salt(name))
        return random_value(distribution, rng)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        with self._lock:
            self._decisions.pop(trial._trial_id, None)
        super().after_trial(study, trial, state, values)

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

    def _view(self, study: Study, trials: list[FrozenTrial]) -> PopulationView:
        """The population as the finished trials define it, plus what is in flight."""
        return PopulationView(
            study,
            trials,
            per_study(self._caches, study, StudyCache),
            seed=self._seed,
            size_rule=(self._population_size, self._n_startup_trials),
            tie_break=self.tie_break,
        )

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
