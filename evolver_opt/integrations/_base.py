"""What our Optuna samplers share: the float parameters are theirs, the rest is delegated."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import optuna
from optuna import distributions
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from evolver_opt.core.config import HYPERPARAMETERS, EvolverConfig
from evolver_opt.errors import ConfigError

_logger = optuna.logging.get_logger("evolver_opt.integrations")

# study system attribute: {"below": N, "distributions": [distribution JSON, ...],
# "names": {name: index into distributions}} (a study has a handful of distinct distributions)
KEY_SEARCH_SPACE = "evolver:search_space"
CHECKPOINT_EVERY = 20  # trials between two writes of the search-space checkpoint


class FloatSpaceSampler(BaseSampler):
    """Relative search space: the study's (non-single) float parameters. Other parameters go to
    ``independent_sampler``, with one warning per sampler."""

    _draws_floats = False  # True: ``_sample_float`` draws every float parameter outside the space

    def __init__(self, independent_sampler: BaseSampler, warn_independent_sampling: bool) -> None:
        self._independent = independent_sampler
        self._warn_independent = warn_independent_sampling
        self._warned = False
        self._spaces: dict[tuple[int, int], FloatSearchSpace] = {}

    def reseed_rng(self) -> None:
        # Only the delegate: our own draws are keyed on a seed (exact resume needs them fixed).
        self._independent.reseed_rng()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        space = per_study(
            self._spaces, study, lambda storage: FloatSearchSpace(storage, study._study_id)
        )
        return space.update(study._get_trials(deepcopy=False, use_cache=True))

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        check_single_objective(study, self)
        return self._sample_space(study, trial, search_space) if search_space else {}

    def _sample_space(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """The relative parameters for a non-empty ``search_space`` (single objective)."""
        raise NotImplementedError

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._independent.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._independent.after_trial(study, trial, state, values)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        check_single_objective(study, self)
        if self._draws_floats and isinstance(param_distribution, FloatDistribution):
            return self._sample_float(study, trial, param_name, param_distribution)
        if not any(
            t.state.is_finished() for t in study._get_trials(deepcopy=False, use_cache=True)
        ):
            # the first trial: no search space yet, so no reason to warn
            return self._independent.sample_independent(
                study, trial, param_name, param_distribution
            )
        return self._sample_elsewhere(study, trial, param_name, param_distribution)

    def _sample_float(
        self, study: Study, trial: FrozenTrial, name: str, distribution: FloatDistribution
    ) -> float:
        """A float parameter outside the relative space, when ``_draws_floats`` is set."""
        raise NotImplementedError

    def _sample_elsewhere(
        self, study: Study, trial: FrozenTrial, name: str, distribution: BaseDistribution
    ) -> Any:
        """Delegate ``name`` to the independent sampler, warning once."""
        if self._warn_independent and not self._warned:
            self._warned = True
            _logger.warning(
                f"{type(self).__name__} samples float parameters only; parameter '{name}' "
                f"({type(distribution).__name__}) is sampled by "
                f"{type(self._independent).__name__}. Further warnings are suppressed."
            )
        return self._independent.sample_independent(study, trial, name, distribution)


_Cache = TypeVar("_Cache")


def per_study(
    caches: dict[tuple[int, int], Any], study: Study, make: Callable[[Any], _Cache]
) -> _Cache:
    """The cache this sampler keeps for ``study`` (made by ``make(storage)`` on first use; the
    cache holds its storage, so the storage's id() in the key stays unique)."""
    key = (id(study._storage), study._study_id)
    cache = caches.get(key)
    if cache is None or cache.storage is not study._storage:
        cache = caches[key] = make(study._storage)
    return cache


class FloatSearchSpace:
    """The non-single float parameters of Optuna's intersection search space (with pruned
    trials, as ``IntersectionSearchSpace(include_pruned=True)``), updated from the trials that
    finished since the last call and returned without deep-copying its distributions.

    With a ``study_id``, it keeps a checkpoint in the study system attribute
    ``evolver:search_space`` (the intersection over the trials numbered below ``below``, all
    finished, so it never changes), written every ``CHECKPOINT_EVERY`` trials: a resumed
    process starts from it and reads the distributions of the later trials only. A malformed
    checkpoint is ignored (with a warning) and the space is computed from the trials.
    """

    _STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING, TrialState.RUNNING)

    def __init__(self, storage: Any, study_id: int | None = None) -> None:
        self.storage = storage  # keeps the storage alive, so its id() stays unique
        self._study_id = study_id
        self._space: dict[str, BaseDistribution] | None = None  # None: no finished trial yet
        self._next = -1  # trials numbered below this are in ``_space``
        self._floats: dict[str, BaseDistribution] = {}
        self._checkpoint = -1  # ``below`` of the checkpoint last read or written
        self._restored = study_id is None
        self._lock = threading.Lock()  # threads of one process share the sampler

    def update(self, trials: list[FrozenTrial]) -> dict[str, BaseDistribution]:
        with self._lock:
            if not self._restored:
                self._restore()
                self._check_restored(trials)
            floats = self._update(trials)
            if self._space is not None and self._next >= self._checkpoint + CHECKPOINT_EVERY:
                self._save()
            return floats

    def _update(self, trials: list[FrozenTrial]) -> dict[str, BaseDistribution]:
        space, next_number = self._space, -1
        for trial in reversed(trials):  # newest first, down to the ones already counted
            if trial.state not in self._STATES:
                continue
            if next_number == -1:
                next_number = trial.number + 1
            if trial.number < self._next:
                break
            if not trial.state.is_finished():
                next_number = trial.number  # count it once it has finished
                continue
            if space is None:
                space = dict(trial.distributions)
                continue
            theirs = trial.distributions
            if space.items() <= theirs.items():  # the usual case, at C speed: nothing drops
                continue
            space = {
                name: d
                for name, d in space.items()
                if (other := theirs.get(name)) is d or (other is not None and other == d)
            }
        if space is not self._space:
            self._floats = _non_single_floats(space)
        self._space, self._next = space, next_number
        return dict(self._floats)

    def _restore(self) -> None:
        self._restored = True
        assert self._study_id is not None
        raw = self.storage.get_study_system_attrs(self._study_id).get(KEY_SEARCH_SPACE)
        if raw is None:
            return
        try:
            below = int(raw["below"])
            kinds = [distributions.json_to_distribution(text) for text in raw["distributions"]]
            space = {name: kinds[k] for name, k in raw["names"].items()}
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            _logger.warning(
                f"ignoring the malformed study attribute {KEY_SEARCH_SPACE} ({exc!r}); "
                "the search space is computed from the trials"
            )
            return
        self._space, self._next, self._checkpoint = space, below, below
        self._floats = _non_single_floats(space)

    def _check_restored(self, trials: list[FrozenTrial]) -> None:
        """Drop a checkpoint the trials contradict (a ``below`` past the study's end, or a
        distribution that the last trial it covers does not have): one warning, and the space
        is computed from the trials."""
        if self._space is None:
            return
        covered = [
            t for t in trials[: self._next] if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        ]
        last = covered[-1] if covered else None
        if (
            self._next <= len(trials)
            and last is not None
            and self._space.items() <= last.distributions.items()
        ):
            return
        _logger.warning(
            f"ignoring the study attribute {KEY_SEARCH_SPACE}: it does not match the study's "
            f"trials (below={self._next}, {len(trials)} trials); the search space is computed "
            "from the trials"
        )
        self._space, self._next, self._checkpoint, self._floats = None, -1, -1, {}

    def _save(self) -> None:
        if self._study_id is None:
            return
        assert self._space is not None
        kinds: dict[str, int] = {}
        names = {
            name: kinds.setdefault(distributions.distribution_to_json(d), len(kinds))
            for name, d in self._space.items()
        }
        value = {"below": self._next, "distributions": list(kinds), "names": names}
        self.storage.set_study_system_attr(self._study_id, KEY_SEARCH_SPACE, value)
        self._checkpoint = self._next


def _non_single_floats(space: dict[str, BaseDistribution] | None) -> dict[str, BaseDistribution]:
    return {
        name: d
        for name, d in sorted((space or {}).items())
        if isinstance(d, FloatDistribution) and not d.single()
    }


class SeededSampler:
    """The ``seed`` and ``config`` properties of the Evolver samplers (their draws are keyed
    on the seed, their offspring made by the config)."""

    _seed: int
    _config: EvolverConfig

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def config(self) -> EvolverConfig:
        return self._config


def resolve_seed(seed: int | None) -> int:
    """``seed`` checked, or a fresh one when ``None`` (every draw of ours is keyed on it)."""
    if seed is not None and (not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed={seed!r} is invalid: expected None or a non-negative int")
    return seed if seed is not None else int(np.random.SeedSequence().entropy % 2**63)


def evolver_config(
    config: EvolverConfig | None = None, /, *, sampler: bool = True, **options: Any
) -> EvolverConfig:
    """``config`` (default ``EvolverConfig()``) with ``options`` replaced. An unknown name
    raises ``TypeError``; a bad value, for a ``sampler``, the plain ``ValueError`` an Optuna
    sampler's constructor gives, else ``EvolverConfig``'s :class:`ConfigError`."""
    if config is not None and not isinstance(config, EvolverConfig):
        raise ValueError(f"config={config!r} is invalid: expected an EvolverConfig or None")
    unknown = sorted(set(options) - set(HYPERPARAMETERS))
    if unknown:  # what Python says of an unknown keyword argument, naming the valid ones
        raise TypeError(
            f"unexpected keyword argument(s) {', '.join(unknown)}; Evolver's hyperparameters "
            f"(EvolverConfig) are {', '.join(HYPERPARAMETERS)}"
        )
    try:
        return (config or EvolverConfig()).with_options(**options)
    except ConfigError as exc:
        if not sampler:
            raise
        raise ValueError(str(exc)) from exc


def declare_hyperparameters(
    init: Callable[..., None], leave_out: tuple[str, ...] = ()
) -> Callable[..., None]:
    """Give ``init`` (a constructor taking ``**hyperparameters``) a signature that lists
    ``EvolverConfig``'s fields in their place, keyword-only with their defaults: ``help()``,
    ``inspect`` and Nevergrad's repr see each hyperparameter, declared once, in the config."""
    signature = inspect.signature(init)
    defaults = EvolverConfig()
    declared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=getattr(defaults, name))
        for name in HYPERPARAMETERS
        if name not in leave_out
    ]
    kept = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    init.__signature__ = signature.replace(parameters=[*kept, *declared])  # type: ignore[attr-defined]
    return init


def check_single_objective(study: Study, sampler: BaseSampler) -> None:
    if study._is_multi_objective():
        raise ValueError(f"{type(sampler).__name__} supports single-objective studies only")
