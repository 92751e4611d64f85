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
    ...     _ = opt.tell(cand.index, float(np.sum((cand.x - 0.3) ** 2)))
    >>> bool(opt.best_value < 0.1)
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from evolver_opt.core.config import STATE_VERSION, EvolverConfig
from evolver_opt.core.operators import (
    adapted,
    choose_target,
    initial_point,
    into_bounds,
    is_better,
    make_offspring,
)
from evolver_opt.errors import ConfigError, StateError


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
        x = np.asarray(x, dtype=float)
        if x.shape != (self.dim,):  # before clipping: a wrong shape would broadcast or fail
            raise ConfigError(f"point has shape {x.shape}; expected ({self.dim},)")
        x = into_bounds(x, self._lower, self._upper, "clip")
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
