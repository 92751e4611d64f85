"""Evolver as a Nevergrad optimizer, and ``NevergradSampler``: any Nevergrad optimizer as an
Optuna sampler whose state is rebuilt from the study's trials (no pickle in the database).

Importing this module registers nothing; call :func:`register_nevergrad` to add ``"Evolver"``
to ``nevergrad.optimizers.registry``.
"""

from __future__ import annotations

import difflib
import functools
import math
import threading
import weakref
from typing import Any

import nevergrad as ng
import numpy as np
import optuna
from nevergrad.optimization import base
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from evolver_opt.core.config import HYPERPARAMETERS, EvolverConfig
from evolver_opt.core.evolver import Evolver
from evolver_opt.errors import ConfigError
from evolver_opt.integrations._base import (
    FloatSpaceSampler,
    declare_hyperparameters,
    evolver_config,
)
from evolver_opt.integrations._space import NumericSpace

_logger = optuna.logging.get_logger(__name__)

REGISTRY_NAME = "Evolver"


class _Evolver(base.Optimizer):
    """Evolver on Nevergrad's standardized data (unbounded; the parametrization bounds it)."""

    def __init__(
        self,
        parametrization: base.IntOrParameter,
        budget: int | None = None,
        num_workers: int = 1,
        config: EvolverOptimizer | None = None,
    ) -> None:
        super().__init__(parametrization, budget=budget, num_workers=num_workers)
        options = (config or EvolverOptimizer()).config()
        size = max(options["population_size"] or 30, num_workers)
        self._core = Evolver(
            np.full(self.dimension, -np.inf),
            np.full(self.dimension, np.inf),
            population_size=size,
            config=EvolverConfig(**{k: v for k, v in options.items() if k in HYPERPARAMETERS}),
            seed=int(self._rng.randint(2**31)),
        )

    def _internal_ask_candidate(self) -> ng.p.Parameter:
        asked = self._core.ask()
        candidate = self.parametrization.spawn_child().set_standardized_data(asked.x)
        candidate._meta["evolver_index"] = asked.index
        return candidate

    def _internal_tell_candidate(self, candidate: ng.p.Parameter, loss: float) -> None:
        index = candidate._meta.get("evolver_index")
        if index is None:
            self._internal_tell_not_asked(candidate, loss)
        else:
            self._core.tell(index, loss)

    def _internal_tell_not_asked(self, candidate: ng.p.Parameter, loss: float) -> None:
        self._core.add_point(candidate.get_standardized_data(reference=self.parametrization), loss)

    def _internal_provide_recommendation(self) -> np.ndarray | None:
        return self._core.best_x


# EvolverConfig's fields that Nevergrad's unbounded, randomly started search has no use for.
NOT_USED = ("bound_handling", "init")


class EvolverOptimizer(base.ConfiguredOptimizer):
    """Evolver (Du et al., ACL Findings 2024) for Nevergrad.

    Args:
        population_size: individuals (default 30 as Nevergrad's DE; at least ``num_workers``).
            Interpolation never leaves the population's hull, so small populations on
            general problems converge early; merge searches seed it with the experts instead.
        config: Evolver's hyperparameters (``EvolverConfig``; restart on the standardized
            scale). ``bound_handling`` and ``init`` do not apply: Nevergrad's standardized
            data is unbounded and the population starts at random.
        **hyperparameters: any of the others by name (``mutation="de"``), replacing
            ``config``'s; the optimizer's repr names those that differ from the defaults.
    """

    @functools.partial(declare_hyperparameters, leave_out=NOT_USED)
    def __init__(
        self,
        *,
        population_size: int | None = None,
        config: EvolverConfig | None = None,
        **hyperparameters: Any,
    ) -> None:
        resolved = evolver_config(config, sampler=False, **hyperparameters)
        unused = {k: getattr(resolved, k) for k in NOT_USED}
        if any(getattr(EvolverConfig(), k) != v for k, v in unused.items()):
            raise ValueError(
                f"EvolverOptimizer does not use {', '.join(NOT_USED)} (Nevergrad's standardized "
                f"data is unbounded, its population starts at random); got {unused}"
            )
        options = {k: v for k, v in resolved.options().items() if k not in NOT_USED}
        # the keys are the signature's (Nevergrad checks it); config is folded into the others
        super().__init__(
            _Evolver,
            {"population_size": population_size, "config": None, **options},
            as_config=True,
        )


Evolver_ = EvolverOptimizer().set_name(REGISTRY_NAME)


def register_nevergrad() -> base.ConfiguredOptimizer:
    """Register ``"Evolver"`` in ``nevergrad.optimizers.registry`` (idempotent)."""
    registry = ng.optimizers.registry
    existing = registry.get(REGISTRY_NAME)
    if existing is None:
        registry.register_name(REGISTRY_NAME, Evolver_)
    elif not isinstance(existing, EvolverOptimizer):
        raise ConfigError(
            f"nevergrad's registry already has another optimizer named {REGISTRY_NAME!r}"
        )
    return registry[REGISTRY_NAME]


def optimizer_class(name: str) -> base.ConfiguredOptimizer | type[base.Optimizer]:
    """The registered Nevergrad optimizer ``name``; an unknown name lists close matches."""
    if name == REGISTRY_NAME:
        register_nevergrad()
    registry = ng.optimizers.registry
    if name not in registry:
        close = difflib.get_close_matches(name, list(registry), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"unknown Nevergrad optimizer {name!r}{hint} (see nevergrad.optimizers.registry)"
        )
    return registry[name]


class NevergradSampler(FloatSpaceSampler):
    """Any Nevergrad optimizer as an Optuna sampler over the study's float parameters.

    The optimizer lives in this process only as a cache: a new process replays every finished
    trial into a fresh optimizer (``tell`` of not-asked points, in trial-number order), so the
    database holds no pickle. A PRUNED trial is told the last value it reported (Optuna stores
    it as the trial's value): sequential optimizers (scipy's COBYLA, Powell..., which ``NGOpt``
    may pick) wait for the tell of every candidate they ask, so an untold one would block the
    next ask for ever. A FAIL or NaN trial asked by this process is told the worst value told
    so far (on replay, and when nothing was told yet, it is skipped).

    Args:
        optimizer: a name in ``nevergrad.optimizers.registry`` (``"NGOpt"``, ``"TwoPointsDE"``,
            ``"CMA"``, ``"Evolver"``...).
        seed: seed of the parametrization's random state.
        budget: the optimizer's budget hint (``NGOpt`` picks its algorithm from it).
        num_workers: the optimizer's parallelism hint.
    """

    def __init__(
        self,
        optimizer: str = "NGOpt",
        *,
        seed: int | None = None,
        budget: int | None = None,
        num_workers: int = 1,
        independent_sampler: BaseSampler | None = None,
        warn_independent_sampling: bool = True,
    ) -> None:
        self._factory = optimizer_class(optimizer)
        if budget is None:
            _check_runs_without_budget(self._factory, optimizer)
        self.optimizer_name = optimizer
        self._seed = seed
        self._budget = budget
        self._num_workers = num_workers
        super().__init__(independent_sampler or RandomSampler(seed=seed), warn_independent_sampling)
        self._lock = threading.Lock()
        self._state: dict[tuple[int, int], _Replay] = {}

    def _sample_space(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        space = NumericSpace(search_space)
        with self._lock:
            replay = self._replay_for(study, space)
            replay.catch_up(study._get_trials(deepcopy=False, use_cache=True))
            candidate = replay.optimizer.ask()
            replay.asked[trial.number] = candidate
            return space.to_params(np.asarray(candidate.value, dtype=float))

    def close(self) -> None:
        """Stop the optimizers' worker threads and drop them (a later ask replays from storage).

        Nevergrad runs scipy-based optimizers (COBYLA, Powell..., which ``NGOpt`` may pick) in a
        thread that waits for the next ``tell``; while one waits, the process cannot exit.
        ``evolver_opt.run_study`` calls this when it ends, and each optimizer is also stopped
        just before the interpreter waits for its threads.
        """
        with self._lock:
            for replay in self._state.values():
                stop_worker_threads(replay.optimizer)
            self._state.clear()

    def _replay_for(self, study: Study, space: NumericSpace) -> _Replay:
        key = (id(study._storage), study._study_id)
        replay = self._state.get(key)
        if replay is None or replay.names != space.names or replay.storage is not study._storage:
            parametrization = ng.p.Array(
                init=(space.lower + space.upper) / 2, lower=space.lower, upper=space.upper
            )
            parametrization.random_state = np.random.RandomState(self._seed)
            optimizer = self._factory(
                parametrization, budget=self._budget, num_workers=self._num_workers
            )
            _stop_before_exit(optimizer)
            sign = 1.0 if study.direction == StudyDirection.MINIMIZE else -1.0
            replay = self._state[key] = _Replay(study._storage, space, optimizer, sign)
        return replay


def _check_runs_without_budget(factory: Any, name: str) -> None:
    """Raise ``ConfigError`` if optimizer ``name`` cannot be built without a budget (``NGOpt``
    and the other wizards pick their algorithm from it and assert that it is set)."""
    try:
        probe = factory(ng.p.Array(shape=(2,)), budget=None)
        probe.ask()  # wizards choose (and assert) on the first ask
    except AssertionError:
        raise ConfigError(
            f"Nevergrad optimizer {name!r} chooses its algorithm from the budget and needs one: "
            f"NevergradSampler({name!r}, budget=N) with N the number of trials the study will "
            "run (evolver-opt run and compare pass the study's n_trials)"
        ) from None
    stop_worker_threads(probe)


def stop_worker_threads(optimizer: base.Optimizer) -> None:
    """Stop the thread of every recast (scipy-based) optimizer in ``optimizer`` and in the
    optimizers it wraps (``NGOpt``'s choice, chains, portfolios)."""
    pending, seen = [optimizer], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        thread = getattr(current, "_messaging_thread", None)
        if thread is not None:
            thread.stop()
        for value in vars(current).values():
            for item in value if isinstance(value, list | tuple) else (value,):
                if isinstance(item, base.Optimizer):
                    pending.append(item)


def _stop_before_exit(optimizer: base.Optimizer) -> None:
    """Stop ``optimizer``'s threads when the interpreter shuts down, before it joins threads
    (``atexit`` runs after that join, too late); a no-op once the optimizer is gone."""
    register = getattr(threading, "_register_atexit", None)  # what concurrent.futures uses
    if register is None:
        return
    ref = weakref.ref(optimizer)

    def stop() -> None:
        live = ref()
        if live is not None:
            stop_worker_threads(live)

    try:
        register(stop)
    except RuntimeError:  # already shutting down
        pass


class _Replay:
    """A Nevergrad optimizer fed with a study's finished trials, each exactly once."""

    def __init__(
        self, storage: Any, space: NumericSpace, optimizer: base.Optimizer, sign: float
    ) -> None:
        self.storage = storage
        self.space = space
        self.names = space.names
        self.optimizer = optimizer
        self.sign = sign
        self.told: set[int] = set()
        self.asked: dict[int, ng.p.Parameter] = {}
        self.worst: float | None = None  # the largest loss told so far

    def catch_up(self, trials: list[FrozenTrial]) -> None:
        for t in trials:
            if t.number in self.told or not t.state.is_finished():
                continue
            self.told.add(t.number)
            candidate = self.asked.pop(t.number, None)
            loss = self._loss(t)
            if loss is None and candidate is not None and self.worst is not None:
                loss = self.worst  # a failure of a point we asked: never leave it untold
            if loss is None or any(name not in t.params for name in self.names):
                continue
            if candidate is None:  # replay: a point this optimizer did not ask
                vector = self.space.to_vector(t.params)
                candidate = self.optimizer.parametrization.spawn_child(new_value=vector)
            self.optimizer.tell(candidate, loss)
            self.worst = loss if self.worst is None else max(self.worst, loss)

    def _loss(self, t: FrozenTrial) -> float | None:
        """The value to tell: COMPLETE trials' values, PRUNED ones' last reported value."""
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            return None
        if t.value is None or not math.isfinite(t.value):
            return None
        return self.sign * t.value
