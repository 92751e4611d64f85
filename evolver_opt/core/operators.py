"""Evolver's operators as pure functions of (seed, index, population): the target, the
reference, mutation (interpolation, DE, JADE's current-to-pbest/1, the restart kick),
binomial crossover, the bounds, jDE's rates, start points and greedy selection. The module
docstring of :mod:`evolver_opt.core.evolver` gives the algorithm step by step."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from evolver_opt.core.config import (
    _STREAM_ADAPT,
    _STREAM_INIT,
    _STREAM_OFFSPRING,
    _STREAM_ORDER,
    JDE_F_RANGE,
    JDE_TAU,
    KICK_SIGMA,
    BoundHandling,
    EvolverConfig,
    rng_for,
)
from evolver_opt.errors import ConfigError


@dataclass(frozen=True)
class Offspring:
    """One offspring: where it came from and its coordinates."""

    index: int
    target: int
    references: tuple[int, ...]  # slots; pbest's last one may be P + an archive row
    reference_kind: Literal["random", "best", "pbest", "restart"]
    x: np.ndarray = field(repr=False)
    n_from_mutant: int
    F: float = 0.5  # the interpolation weight (DE scale) it was made with
    CR: float = 0.5  # and its crossover rate


def generation_order(seed: int, generation: int, population_size: int) -> np.ndarray:
    """The order in which ``generation`` visits the individuals (a seeded permutation)."""
    return rng_for(seed, _STREAM_ORDER, generation).permutation(population_size)


def choose_target(seed: int, index: int, population_size: int, busy: Iterable[int] = ()) -> int:
    """Target of offspring ``index``: its place in its generation's order, skipping ``busy``
    individuals (held by offspring still being evaluated) when a free one exists."""
    generation, position = divmod(index, population_size)
    order = generation_order(seed, generation, population_size)
    busy_set = set(busy)
    for shift in range(population_size):
        candidate = int(order[(position + shift) % population_size])
        if candidate not in busy_set:
            return candidate
    return int(order[position])


def random_point(seed: int, index: int, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """A random initial point: uniform in finite bounds, standard normal where unbounded."""
    rng = rng_for(seed, _STREAM_INIT, index)
    finite = np.isfinite(lower) & np.isfinite(upper)
    uniform = rng.random(lower.shape)
    normal = rng.standard_normal(lower.shape)
    return np.where(finite, lower + uniform * np.where(finite, upper - lower, 0.0), normal)


def perturbed_point(
    seed: int,
    index: int,
    starts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    how: BoundHandling = "reflect",
) -> np.ndarray:
    """Initial point ``index`` as a perturbed copy of start point ``index mod len(starts)``:
    a Gaussian step of ``KICK_SIGMA`` of the width in every coordinate, mapped into bounds."""
    rng = rng_for(seed, _STREAM_INIT, index)
    base = starts[index % len(starts)]
    return into_bounds(base + KICK_SIGMA * _scale(lower, upper) * rng.standard_normal(base.shape),
                       lower, upper, how)  # fmt: skip


def initial_point(
    seed: int,
    index: int,
    starts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    config: EvolverConfig,
) -> np.ndarray:
    """The start of slot ``index`` beyond the given ``starts`` (n x D): uniform random, or with
    ``init="perturbed"`` (and some start given) a perturbed copy of one."""
    if config.init == "perturbed" and len(starts):
        return perturbed_point(seed, index, starts, lower, upper, config.bound_handling)
    return random_point(seed, index, lower, upper)


def _scale(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Each coordinate's width, 1 where unbounded."""
    width = upper - lower
    return np.where(np.isfinite(width), width, 1.0)


def spread(xs: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """The population's mean standard deviation per coordinate, relative to the width (0 when
    every individual is the same point)."""
    width = _scale(lower, upper)
    safe = np.where(width > 0, width, 1.0)
    return float(np.mean(np.std(xs, axis=0) / safe)) if xs.size else 0.0


def into_bounds(
    x: np.ndarray, lower: np.ndarray, upper: np.ndarray, how: BoundHandling
) -> np.ndarray:
    """Map ``x`` into ``[lower, upper]`` by clipping or by reflection at the bounds."""
    if how == "reflect":
        width = upper - lower
        finite = np.isfinite(width) & (width > 0)
        safe = np.where(finite, width, 1.0)
        y = np.mod(x - lower, 2.0 * safe)
        y = np.where(y > safe, 2.0 * safe - y, y)
        x = np.where(finite, lower + y, x)
    return np.clip(x, lower, upper)


def adapted(
    seed: int, index: int, parent: tuple[float, float] | None, config: EvolverConfig
) -> tuple[float, float]:
    """``(F, CR)`` of offspring ``index``: the config's without adaptation; with ``adapt="jde"``
    each of the parent's (the config's for a start point) is redrawn with probability
    ``JDE_TAU``, F uniform in ``JDE_F_RANGE`` and CR in [0, 1]. Keyed on ``(seed, index)``."""
    if config.adapt == "none":
        return config.F, config.CR
    F, CR = (config.F, config.CR) if parent is None else parent
    u = rng_for(seed, _STREAM_ADAPT, index).random(4)
    if u[0] < JDE_TAU:
        lo, hi = JDE_F_RANGE
        F = lo + u[1] * (hi - lo)
    if u[2] < JDE_TAU:
        CR = float(u[3])
    return float(F), float(CR)


def make_offspring(
    index: int,
    target: int,
    xs: np.ndarray,
    values: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    seed: int,
    config: EvolverConfig,
    *,
    F: float | None = None,
    CR: float | None = None,
    archive: np.ndarray | None = None,
) -> Offspring:
    """Offspring ``index`` of ``target`` from population ``xs`` (P x D) with ``values`` (P,;
    NaN where not evaluated yet); ``F`` and ``CR`` replace the config's (self-adaptation);
    ``archive`` (A x D): replaced parents, for ``mutation="pbest"``.
    Pure: the same arguments give the same offspring."""
    F = config.F if F is None else F
    CR = config.CR if CR is None else CR
    size = xs.shape[0]
    if size < 2:
        raise ConfigError(f"population_size={size} is too small: Evolver needs at least 2")
    rng = rng_for(seed, _STREAM_OFFSPRING, index)
    generation = index // size
    others = np.array([j for j in range(size) if j != target])
    distinct = others[np.any(xs[others] != xs[target], axis=1)]
    if distinct.size:  # a reference equal to the target would only re-evaluate the parent
        others = distinct
    scored = others[np.isfinite(values[others])]
    crossover = True
    if config.restart is not None and spread(xs, lower, upper) < config.restart:
        mutant, kind, crossover = _kick(target, xs, values, lower, upper, rng), "restart", False
        references: tuple[int, ...] = (_best(target, values),)
    elif config.mutation == "pbest":
        mutant, references = _pbest(target, xs, values, rng, config.p_best, F, archive)
        kind = "pbest"
    else:
        use_random = rng.random() < config.p_random_at(generation) or scored.size == 0
        if use_random:
            reference = int(rng.choice(others))
        else:  # best other individual; ties go to the lower index
            reference = int(scored[np.argmin(values[scored])])
        kind = "random" if use_random else "best"
        if config.mutation == "interpolate":
            references = (reference,)
            mutant = (1.0 - F) * xs[target] + F * xs[reference]
        else:
            rest = np.array([j for j in range(size) if j not in (target, reference)])
            if rest.size < 2:
                raise ConfigError(
                    f"population_size={size} is too small: mutation='de' needs at least 4"
                )
            r2, r3 = (int(j) for j in rng.choice(rest, size=2, replace=False))
            references = (reference, r2, r3)
            mutant = xs[reference] + F * (xs[r2] - xs[r3])
    parent = xs[target]
    dim = parent.shape[0]
    mask = np.ones(dim, dtype=bool)
    if crossover:
        mask = rng.random(dim) < CR
    if crossover and dim:  # Eq. 3's j_rand, drawn where the mutant differs, so u never repeats
        differs = np.flatnonzero(mutant != parent)  # its parent
        j_rand = rng.integers(dim)
        mask[differs[j_rand % differs.size] if differs.size else j_rand] = True
    x = into_bounds(np.where(mask, mutant, parent), lower, upper, config.bound_handling)
    return Offspring(index=index, target=target, references=references, reference_kind=kind,
                     x=x, n_from_mutant=int(mask.sum()), F=F, CR=CR)  # fmt: skip


def _best(target: int, values: np.ndarray) -> int:
    """The best scored individual (the lower index on ties), ``target`` when none is scored."""
    finite = np.isfinite(values)
    return int(np.flatnonzero(finite)[np.argmin(values[finite])]) if finite.any() else target


def _pbest(
    target: int,
    xs: np.ndarray,
    values: np.ndarray,
    rng: np.random.Generator,
    p_best: float,
    F: float,
    archive: np.ndarray | None,
) -> tuple[np.ndarray, tuple[int, ...]]:
    """JADE's DE/current-to-pbest/1 mutant with archive: ``x_pbest`` one of the best
    ``max(2, ceil(p_best P))`` scored individuals, ``x_r1`` another individual, ``x_r2`` an
    individual or an archived parent (index ``P + row``), all distinct where possible."""
    size = xs.shape[0]
    pool = xs if archive is None or not len(archive) else np.vstack([xs, archive])
    scored = np.flatnonzero(np.isfinite(values))
    if scored.size == 0:
        scored = np.arange(size)
    ranked = scored[np.argsort(values[scored], kind="stable")]
    pbest = int(rng.choice(ranked[: max(2, math.ceil(p_best * size))]))
    r1 = int(rng.choice(np.array([j for j in range(size) if j != target])))
    r2_choices = np.array([j for j in range(len(pool)) if j not in (target, r1)])
    r2 = int(rng.choice(r2_choices)) if r2_choices.size else r1
    x = xs[target]
    return x + F * (xs[pbest] - x) + F * (xs[r1] - pool[r2]), (pbest, r1, r2)


def _kick(
    target: int,
    xs: np.ndarray,
    values: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """A restart of a collapsed population: the best individual plus a Gaussian step of
    ``KICK_SIGMA`` of the width in every coordinate (taken whole: no crossover)."""
    step = KICK_SIGMA * _scale(lower, upper) * rng.standard_normal(xs.shape[1])
    return xs[_best(target, values)] + step


def is_better(value: float, incumbent: float | None) -> bool:
    """Greedy selection (Eq. 4): a finite value beats a missing one or a strictly larger one."""
    if not math.isfinite(value):
        return False
    return incumbent is None or value < incumbent
