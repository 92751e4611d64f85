"""What our Optuna samplers share: the float parameters are theirs, the rest is delegated."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

_logger = optuna.logging.get_logger("evolver_opt.integrations")


class FloatSpaceSampler(BaseSampler):
    """Relative search space: the study's (non-single) float parameters. Other parameters go to
    ``independent_sampler``, with one warning per sampler."""

    def __init__(self, independent_sampler: BaseSampler, warn_independent_sampling: bool) -> None:
        self._independent = independent_sampler
        self._warn_independent = warn_independent_sampling
        self._warned = False
        self._search_space = IntersectionSearchSpace(include_pruned=True)

    def reseed_rng(self) -> None:
        # Only the delegate: our own draws are keyed on a seed (exact resume needs them fixed).
        self._independent.reseed_rng()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        space = self._search_space.calculate(study, use_cache=True)
        return {
            k: d for k, d in space.items() if isinstance(d, FloatDistribution) and not d.single()
        }

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


def check_single_objective(study: Study, sampler: BaseSampler) -> None:
    if study._is_multi_objective():
        raise ValueError(f"{type(sampler).__name__} supports single-objective studies only")
