"""Evolver (Du et al., "Knowledge Fusion By Evolving Weights of Language Models", ACL Findings
2024, arXiv 2406.12208) as a steady-state ask/tell optimizer over a bounded real vector.

The optimizer **minimizes**. Integrations that maximize (Optuna ``direction="maximize"``) negate
values before telling them.

One offspring (paper, Sec. 3):
  1. target ``i``: generation ``g`` visits every individual once, in a random order (Alg. 1);
  2. reference ``r != i``: a random other individual with probability ``p``, else the best other
     one; the released code uses ``p = 0.5 / (G - g) + 0.5`` over ``G`` generations;
  3. mutation by interpolation ``v = (1 - F) x_i + F x_r`` (the released code), or the DE form
     ``v = x_r1 + F (x_r2 - x_r3)`` (paper, Eq. 2), or, beyond the paper, JADE's
     current-to-pbest/1 with an archive of replaced parents (``mutation="pbest"``,
     ``v = x_i + F (x_pbest - x_i) + F (x_r1 - x_r2)``, ``x_r2`` from population + archive);
  4. binomial crossover: ``u_j = v_j`` with probability ``CR``, else ``x_ij``; one random
     coordinate always comes from ``v`` (Eq. 3);
  5. greedy selection: ``u`` replaces ``x_i`` only if it is strictly better (Eq. 4).

Beyond the paper, too: a restart when the population collapses (``restart``: below that mean
spread per coordinate, relative to the bounds, an offspring is a Gaussian kick of the best
individual over every coordinate) and start points filled up with perturbed copies of the given
ones (``init="perturbed"``) rather than uniform random points.

Every random draw of offspring ``k`` comes from ``(seed, k)``, never from a process-wide
generator, so the same state and seed always give the same offspring.

Example::

    >>> import numpy as np
    >>> from evolver_opt.core import Evolver
    >>> opt = Evolver(lower=np.zeros(3), upper=np.ones(3), initial_points=np.eye(3), seed=0)
    >>> for _ in range(60):
    ...     cand = opt.ask()
    ...     opt.tell(cand.index, float(np.sum((cand.x - 0.3) ** 2)))
    >>> bool(opt.best_value < 0.1)
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from evolver_opt.errors import ConfigError, StateError

Mutation = Literal["interpolate", "de", "pbest"]
BoundHandling = Literal["clip", "reflect"]
Adaptation = Literal["none", "jde"]
InitialFill = Literal["random", "perturbed"]

# Separate random streams, so that e.g. the generation order never shares draws with offspring.
_STREAM_OFFSPRING = 0
_STREAM_ORDER = 1
_STREAM_INIT = 2
_STREAM_ADAPT = 5  # jDE's redraws of F and CR (3: named params, 4: element Evolver)

# jDE (Brest et al., IEEE TEC 2006): each individual carries its own F and CR; an offspring
# redraws each with probability TAU, else inherits its parent's, and keeps them if it wins.
JDE_TAU = 0.1
JDE_F_RANGE = (0.1, 1.0)

# A restart kick and a perturbed start point: Gaussian steps of this fraction of the bounds'
# width (unbounded coordinates: of 1).
KICK_SIGMA = 0.1

STATE_VERSION = 1


def rng_for(seed: int, stream: int, index: int) -> np.random.Generator:
    """The generator of draw ``index`` on ``stream``: a pure function of ``(seed, stream, index)``."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))


@dataclass(frozen=True)
class EvolverConfig:
    """Hyperparameters of Evolver; see the module docstring for their meaning."""

    F: float = 0.5
    CR: float = 0.5
    mutation: Mutation = "interpolate"
    p_random: float | None = 0.5
    n_generations: int | None = None
    bound_handling: BoundHandling = "clip"
    adapt: Adaptation = "none"  # "jde": self-adaptive F and CR per individual
    p_best: float = 0.2  # pbest: x_pbest is one of the best ceil(p_best * P) (at least 2)
    restart: float | None = None  # collapse threshold of the mean relative spread; None: never
    init: InitialFill = "random"  # fill of the slots beyond the given start points

    def __post_init__(self) -> None:
        if not 0.0 < self.p_best <= 1.0:
            raise ConfigError(f"p_best={self.p_best!r} is invalid: expected 0 < p_best <= 1")
        if self.restart is not None and not 0.0 < self.restart < 1.0:
            raise ConfigError(
                f"restart={self.restart!r} is invalid: expected None or a spread in (0, 1)"
            )
        if self.init not in ("random", "perturbed"):
            raise ConfigError(f"init={self.init!r} is invalid: expected 'random' or 'perturbed'")
        if not 0.0 < self.F <= 1.0 and self.mutation == "interpolate":
            raise ConfigError(f"F={self.F!r} is invalid: interpolation needs 0 < F <= 1")
        if not 0.0 < self.F <= 2.0:
            raise ConfigError(f"F={self.F!r} is invalid: expected 0 < F <= 2")
        if not 0.0 <= self.CR <= 1.0:
            raise ConfigError(f"CR={self.CR!r} is invalid: expected 0 <= CR <= 1")
        if self.mutation not in ("interpolate", "de", "pbest"):
            raise ConfigError(
                f"mutation={self.mutation!r} is invalid: expected 'interpolate', 'de' or 'pbest'"
            )
        if self.bound_handling not in ("clip", "reflect"):
            raise ConfigError(
                f"bound_handling={self.bound_handling!r} is invalid: expected 'clip' or 'reflect'"
            )
        if self.adapt not in ("none", "jde"):
            raise ConfigError(f"adapt={self.adapt!r} is invalid: expected 'none' or 'jde'")
        if self.p_random is not None and not 0.0 <= self.p_random <= 1.0:
            raise ConfigError(f"p_random={self.p_random!r} is invalid: expected 0 <= p_random <= 1")
        if self.p_random is None and (self.n_generations is None or self.n_generations < 1):
            raise ConfigError(
                "p_random=None selects the released code's schedule p = 0.5/(G-g) + 0.5, "
                f"which needs n_generations >= 1 (got {self.n_generations!r})"
            )

    def p_random_at(self, generation: int) -> float:
        """Probability of a random (rather than the best) reference in ``generation``."""
        if self.p_random is not None:
            return self.p_random
        assert self.n_generations is not None
        remaining = self.n_generations - generation
        return 1.0 if remaining <= 0 else 0.5 / remaining + 0.5


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


@dataclass(frozen=True)
class Candidate:
    """What :meth:`Evolver.ask` returns: evaluate ``x`` and tell ``index`` its value."""

    index: int
    x: np.ndarray = field(repr=False)
    role: Literal["init", "offspring"]
    target: int
    references: tuple[int, ...] = ()


class Evolver:
    """Steady-state Evolver over ``[lower, upper]`` (minimizing), with JSON state.

    The population is ``initial_points`` (e.g. the one-hot coefficient vectors of the fine-tuned
    models, plus static merges), filled up with random points to ``population_size``. Several
    candidates may be asked before any is told; offspring prefer targets that no pending
    offspring holds. Non-finite values (NaN, inf) are lost offspring: they never replace anyone.
    """

    def __init__(
        self,
        lower: Sequence[float] | np.ndarray,
        upper: Sequence[float] | np.ndarray,
        *,
        initial_points: Sequence[Sequence[float]] | np.ndarray | None = None,
        population_size: int | None = None,
        config: EvolverConfig | None = None,
        seed: int = 0,
    ) -> None:
        self._lower = np.asarray(lower, dtype=float)
        self._upper = np.asarray(upper, dtype=float)
        if self._lower.ndim != 1 or self._lower.shape != self._upper.shape:
            raise ConfigError(
                f"lower/upper shapes {self._lower.shape} and {self._upper.shape} must be equal 1-D"
            )
        if np.any(self._lower > self._upper):
            raise ConfigError("lower must be <= upper in every coordinate")
        points = (
            np.zeros((0, self.dim)) if initial_points is None else np.asarray(initial_points, float)
        )
        if points.ndim != 2 or points.shape[1] != self.dim:
            raise ConfigError(f"initial_points has shape {points.shape}; expected (n, {self.dim})")
        size = population_size if population_size is not None else (len(points) or 10)
        if size < 2:
            raise ConfigError(f"population_size={size} is too small: Evolver needs at least 2")
        if len(points) > size:
            raise ConfigError(
                f"{len(points)} initial points exceed population_size={size}; raise population_size"
            )
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"seed={seed!r} is invalid: expected a non-negative int")
        self.config = config or EvolverConfig()
        self.seed = int(seed)
        self._xs = np.vstack(
            [points]
            + [
                initial_point(self.seed, i, points, self._lower, self._upper, self.config)[None]
                for i in range(len(points), size)
            ]
        )
        self._xs = into_bounds(self._xs, self._lower, self._upper, "clip")
        self._values: list[float | None] = [None] * size
        self._params: list[list[float] | None] = [None] * size  # jDE's (F, CR) per individual
        self._archive: list[list[float]] = []  # pbest: replaced parents, the last P, oldest first
        self._n_init_asked = 0
        self._n_offspring = 0
        self._n_told = 0
        self._pending: dict[int, dict[str, Any]] = {}

    # ----------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        return int(self._lower.shape[0])

    @property
    def population_size(self) -> int:
        return int(self._xs.shape[0])

    @property
    def generation(self) -> int:
        """Generation of the next offspring (each generation targets every individual once)."""
        return self._n_offspring // self.population_size

    @property
    def population(self) -> tuple[np.ndarray, list[float | None]]:
        """Current individuals (P x D, a copy) and their values (None: not evaluated)."""
        return self._xs.copy(), list(self._values)

    @property
    def best_index(self) -> int | None:
        scored = [(v, i) for i, v in enumerate(self._values) if v is not None]
        return min(scored)[1] if scored else None

    @property
    def best_x(self) -> np.ndarray | None:
        i = self.best_index
        return None if i is None else self._xs[i].copy()

    @property
    def best_value(self) -> float | None:
        i = self.best_index
        return None if i is None else self._values[i]

    @property
    def n_pending(self) -> int:
        return len(self._pending)

    # ----------------------------------------------------------------- ask / tell
    def ask(self) -> Candidate:
        """Next candidate: an unevaluated initial individual first, then offspring."""
        index = self._n_init_asked + self._n_offspring
        if self._n_init_asked < self.population_size:
            slot = self._n_init_asked
            self._n_init_asked += 1
            self._pending[index] = {"role": "init", "target": slot}
            return Candidate(index, self._xs[slot].copy(), "init", slot)
        k = self._n_offspring
        self._n_offspring += 1
        busy = [p["target"] for p in self._pending.values()]
        target = choose_target(self.seed, k, self.population_size, busy)
        values = np.array([np.nan if v is None else v for v in self._values])
        parent = self._params[target]
        F, CR = adapted(
            self.seed, k, None if parent is None else (parent[0], parent[1]), self.config
        )
        archive = np.array(self._archive) if self._archive else None
        child = make_offspring(
            k, target, self._xs, values, self._lower, self._upper, self.seed, self.config,
            F=F, CR=CR, archive=archive,
        )  # fmt: skip
        self._pending[index] = {
            "role": "offspring", "target": target, "x": child.x.tolist(), "F": F, "CR": CR,
        }  # fmt: skip
        return Candidate(index, child.x, "offspring", target, child.references)

    def tell(self, index: int, value: float) -> bool:
        """Report the value of candidate ``index``; returns whether it entered the population."""
        pending = self._pending.pop(index, None)
        if pending is None:
            raise StateError(f"candidate {index} was not asked or was already told")
        self._n_told += 1
        value = float(value)
        target = pending["target"]
        if not is_better(value, self._values[target]):
            return False
        if pending["role"] == "offspring":
            if self.config.mutation == "pbest":
                self._archive = [*self._archive, self._xs[target].tolist()][-self.population_size :]
            self._xs[target] = np.asarray(pending["x"], dtype=float)
            if self.config.adapt != "none":
                self._params[target] = [float(pending["F"]), float(pending["CR"])]
        self._values[target] = value
        return True

    def add_point(self, x: Sequence[float] | np.ndarray, value: float) -> bool:
        """Tell a point that was not asked (e.g. evaluated elsewhere): it fills an individual
        that has no value and is not being evaluated, else replaces the worst one if better."""
        x = into_bounds(np.asarray(x, dtype=float), self._lower, self._upper, "clip")
        if x.shape != (self.dim,):
            raise ConfigError(f"point has shape {x.shape}; expected ({self.dim},)")
        self._n_told += 1
        value = float(value)
        if not math.isfinite(value):
            return False
        busy = {p["target"] for p in self._pending.values()}
        free = [i for i, v in enumerate(self._values) if v is None and i not in busy]
        if free:
            slot = free[0]
            self._n_init_asked = max(self._n_init_asked, slot + 1)
        else:
            slot = max(
                range(self.population_size),
                key=lambda i: (self._values[i] is None, self._values[i] or 0.0),
            )
            if not is_better(value, self._values[slot]):
                return False
        self._xs[slot] = x
        self._values[slot] = value
        self._params[slot] = None  # a new individual starts from the config's F and CR
        return True

    # ----------------------------------------------------------------- JSON state
    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-serializable state (no pickle); restore with :meth:`from_state_dict`."""
        return {
            "version": STATE_VERSION,
            "config": asdict(self.config),
            "seed": self.seed,
            "lower": _floats(self._lower),
            "upper": _floats(self._upper),
            "xs": self._xs.tolist(),
            "values": list(self._values),
            "params": list(self._params),
            "archive": list(self._archive),
            "n_init_asked": self._n_init_asked,
            "n_offspring": self._n_offspring,
            "n_told": self._n_told,
            "pending": {str(k): v for k, v in self._pending.items()},
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Evolver:
        """Rebuild an optimizer from :meth:`state_dict` output; malformed state raises StateError."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise StateError(
                f"Evolver state must be a dict with version={STATE_VERSION}; got "
                f"{type(state).__name__} with version={getattr(state, 'get', lambda _: None)('version')!r}"
            )
        try:
            xs = np.asarray(state["xs"], dtype=float)
            opt = cls(
                [float(v) for v in state["lower"]],
                [float(v) for v in state["upper"]],
                initial_points=xs,
                population_size=len(xs),
                config=EvolverConfig(**state["config"]),
                seed=int(state["seed"]),
            )
            opt._values = [None if v is None else float(v) for v in state["values"]]
            params = state.get("params") or [None] * len(opt._values)  # older states: none
            opt._params = [None if p is None else [float(p[0]), float(p[1])] for p in params]
            opt._archive = [[float(v) for v in row] for row in state.get("archive", [])]
            if any(len(row) != opt.dim for row in opt._archive):
                raise ValueError(f"an archive row is not of length {opt.dim}")
            opt._n_init_asked = int(state["n_init_asked"])
            opt._n_offspring = int(state["n_offspring"])
            opt._n_told = int(state["n_told"])
            opt._pending = {int(k): dict(v) for k, v in state["pending"].items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"malformed Evolver state: {type(exc).__name__}: {exc}") from exc
        if len(opt._values) != opt.population_size or len(opt._params) != opt.population_size:
            raise StateError(
                f"malformed Evolver state: {len(opt._values)} values for {opt.population_size} individuals"
            )
        return opt


def _floats(a: np.ndarray) -> list[float | str]:
    """Floats for JSON, infinities as strings (strict JSON has no infinity)."""
    return [float(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf") for v in a]
