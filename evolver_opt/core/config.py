"""Evolver's hyperparameters (:class:`EvolverConfig`), its constants and its random streams:
every draw is a pure function of ``(seed, stream, index)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from evolver_opt.errors import ConfigError

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
