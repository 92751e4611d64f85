"""CMA-ES as an Optuna sampler whose state is rebuilt from the study's trials (no pickle).

The algorithm is the ``cmaes`` library's ``CMA`` / ``SepCMA``
(https://github.com/CyberAgentAILab/cmaes; N. Hansen, "The CMA Evolution Strategy: A Tutorial",
arXiv:1604.00772; R. Ros and N. Hansen, "A Simple Modification in CMA-ES Achieving Linear Time
and Space Complexity", PPSN 2008).

Optuna's ``CmaEsSampler`` stores its optimizer as hex pickles in trial system attributes
(``cma:optimizer:N``) and ``pickle.loads`` them on the next ask: anyone who can write the study's
database can run code on every worker. Here the database holds one JSON integer per trial, its
generation (``cma:json:generation``, ``sepcma:json:generation`` when separable), and the
optimizer is a per-process cache: a fresh one from (x0, sigma0, popsize), told generation after
generation the first ``popsize`` COMPLETE trials of each generation in trial-number order, with
their actual parameters. The draw for trial ``n`` of generation ``g`` uses a generator seeded
from (seed, g, n), so a resumed single-worker study asks exactly the trials of an uninterrupted
one. It never reads ``cma:optimizer*`` / ``sepcma:optimizer*`` attributes.
"""

from __future__ import annotations

import math
import secrets
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from cmaes import CMA, SepCMA
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from evolver_opt.integrations._base import FloatSpaceSampler, per_study
from evolver_opt.integrations._space import NumericSpace

KEY_GENERATION = "cma:json:generation"
KEY_GENERATION_SEP = "sepcma:json:generation"


class ReplayCmaEsSampler(FloatSpaceSampler):
    """CMA-ES (or separable CMA-ES) over the study's float parameters, with JSON-only state.

    CMA-ES runs in the search space mapped onto ``[0, 1]^D`` (log-scaled parameters in log
    space), as Optuna's ``CmaEsSampler``: ``sigma0`` is in that unit box (default 1/6) and
    out-of-bounds draws are resampled up to ``10 * D`` times, then clipped. FAIL, PRUNED and
    non-finite trials are not told; a generation is told once ``popsize`` of its trials are
    COMPLETE (later ones are ignored, as Optuna does). Enqueued trials join the current
    generation with their own parameters. Parameters that are not floats go to
    ``independent_sampler``.

    Args:
        x0: the initial mean, by parameter name (default: the middle of each range).
        sigma0: initial step size in the unit box.
        seed: seeds every draw (with the generation and trial number); None: a random seed.
        separable: diagonal covariance (``SepCMA``; O(D) per draw), for hundreds of parameters.
        popsize: trials per generation (default ``4 + floor(3 ln D)``).
    """

    def __init__(
        self,
        *,
        x0: Mapping[str, float] | None = None,
        sigma0: float | None = None,
        seed: int | None = None,
        separable: bool = False,
        popsize: int | None = None,
        independent_sampler: BaseSampler | None = None,
        warn_independent_sampling: bool = True,
    ) -> None:
        if sigma0 is not None and not (math.isfinite(sigma0) and sigma0 > 0):
            raise ValueError(f"sigma0 must be a positive number, got {sigma0!r}")
        if popsize is not None and popsize < 2:
            raise ValueError(f"popsize must be at least 2, got {popsize!r}")
        super().__init__(independent_sampler or RandomSampler(seed=seed), warn_independent_sampling)
        self._x0 = dict(x0 or {})
        self._sigma0 = sigma0 if sigma0 is not None else 1.0 / 6.0
        self._seed = seed if seed is not None else secrets.randbits(63)
        self._separable = separable
        self._popsize = popsize
        self.generation_key = KEY_GENERATION_SEP if separable else KEY_GENERATION
        self._lock = threading.Lock()
        self._replays: dict[tuple[int, int], _Replay] = {}

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        super().before_trial(study, trial)
        if "fixed_params" not in trial.system_attrs or study._is_multi_objective():
            return
        # an enqueued trial may never call sample_relative: it joins the current generation here
        space = self.infer_relative_search_space(study, trial)
        generation = 0
        if space:
            with self._lock:
                generation = self._caught_up(study, NumericSpace(space)).generation
        study._storage.set_trial_system_attr(trial._trial_id, self.generation_key, generation)

    def _sample_space(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        space = NumericSpace(search_space)
        # a caller's categorical parameters (ours never asks for any here)
        params = {
            name: self._independent.sample_independent(study, trial, name, d)
            for name, d in search_space.items()
            if name not in space.distributions
        }
        if space.dim == 0:
            return params
        with self._lock:
            replay = self._caught_up(study, space)
            generation = replay.generation
            replay.optimizer.reseed_rng(_draw_seed(self._seed, generation, trial.number))
            unit = _ask(replay.optimizer)
        study._storage.set_trial_system_attr(trial._trial_id, self.generation_key, generation)
        return params | space.to_params(space.lower + unit * replay.width)

    def _caught_up(self, study: Study, space: NumericSpace) -> _Replay:
        replay = per_study(self._replays, study, lambda storage: _Replay(storage))
        if replay.key != space.key:
            replay.reset(space, self._new_optimizer(space))
        sign = 1.0 if study.direction == StudyDirection.MINIMIZE else -1.0
        replay.catch_up(
            study._get_trials(deepcopy=False, use_cache=True), self.generation_key, sign
        )
        return replay

    def _new_optimizer(self, space: NumericSpace) -> CMA | SepCMA:
        width = _width(space)
        mean = np.clip((space.to_vector(self._x0) - space.lower) / width, 0.0, 1.0)
        bounds = np.tile([0.0, 1.0], (space.dim, 1))
        # SepCMA needs two dimensions or more; on one, both are the same algorithm
        cls = SepCMA if self._separable and space.dim > 1 else CMA
        return cls(
            mean=mean,
            sigma=self._sigma0,
            bounds=bounds,
            seed=0,  # every ask reseeds
            n_max_resampling=10 * space.dim,
            population_size=self._popsize,
        )


class _Replay:
    """One study's optimizer, told every full generation exactly once."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage  # keeps the storage alive, so its id() stays unique
        self.key: tuple | None = None

    def reset(self, space: NumericSpace, optimizer: CMA | SepCMA) -> None:
        self.key, self.space, self.optimizer = space.key, space, optimizer
        self.width = _width(space)

    @property
    def generation(self) -> int:
        return self.optimizer.generation

    def catch_up(self, trials: Sequence[FrozenTrial], key: str, sign: float) -> None:
        popsize = self.optimizer.population_size
        told: dict[int, list[FrozenTrial]] = {}
        for t in trials:  # in trial-number order
            g = t.system_attrs.get(key)
            if type(g) is not int or g < self.generation or t.state != TrialState.COMPLETE:
                continue
            if t.value is None or not math.isfinite(t.value):
                continue
            if any(name not in t.params for name in self.space.names):
                continue
            told.setdefault(g, []).append(t)
        while len(solutions := told.get(self.generation, [])) >= popsize:
            self.optimizer.tell([self._solution(t, sign) for t in solutions[:popsize]])

    def _solution(self, trial: FrozenTrial, sign: float) -> tuple[np.ndarray, float]:
        unit = (self.space.to_vector(trial.params) - self.space.lower) / self.width
        return np.clip(unit, 0.0, 1.0), sign * float(trial.value)  # type: ignore[arg-type]


def _width(space: NumericSpace) -> np.ndarray:
    width = space.upper - space.lower
    return np.where(width > 0, width, 1.0)


def _draw_seed(seed: int, generation: int, number: int) -> int:
    entropy = [seed % 2**64, generation, number]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _ask(optimizer: CMA | SepCMA) -> np.ndarray:
    """``optimizer.ask()``, the draws vectorized: the same normal draws from its generator,
    the first one inside the bounds of its ``n_max_resampling``, else the next one clipped.
    The library's ask recomputes ``B @ diag(D)`` per draw, seconds per ask at D = 400."""
    try:
        rng, mean, sigma = optimizer._rng, optimizer._mean, optimizer._sigma
        bounds, n_max = optimizer._bounds, optimizer._n_max_resampling
        if isinstance(optimizer, SepCMA):
            scale = optimizer._eigen_decomposition()

            def to_x(z: np.ndarray) -> np.ndarray:
                return mean + sigma * (z * scale)
        else:
            B, D = optimizer._eigen_decomposition()
            transform = (B * D).T  # row-vector form of B @ diag(D)

            def to_x(z: np.ndarray) -> np.ndarray:
                return mean + sigma * (z @ transform)
    except AttributeError:  # another cmaes version: its own ask
        return optimizer.ask()
    drawn, chunk = 0, 16
    while drawn < n_max:
        k = min(chunk, n_max - drawn)
        xs = to_x(rng.randn(k, optimizer.dim))
        inside = np.all((xs >= bounds[:, 0]) & (xs <= bounds[:, 1]), axis=1)
        if inside.any():
            return xs[int(np.argmax(inside))]
        drawn, chunk = drawn + k, chunk * 8
    return np.clip(to_x(rng.randn(optimizer.dim)), bounds[:, 0], bounds[:, 1])
