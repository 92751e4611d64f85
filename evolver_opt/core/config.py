"""Evolver's hyperparameters (:class:`EvolverConfig`), its constants and its random streams:
every draw is a pure function of ``(seed, stream, index)``.

:class:`EvolverConfig` is the one declaration of the hyperparameters: ``EvolverSampler``, the
Nevergrad ``EvolverOptimizer`` and a study file's ``[study.evolver]`` table take its fields by
the same names, with its defaults and its ranges (``RANGE`` in each field's metadata).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, get_args, get_origin, get_type_hints

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


# The metadata key of a field's allowed range: pydantic's bounds (gt, ge, lt, le), checked by
# EvolverConfig and by the study file's [study.evolver] model built from these fields.
RANGE = "range"


@dataclass(frozen=True)
class EvolverConfig:
    """Evolver's hyperparameters (Du et al., ACL Findings 2024, and the variants beyond it).

    Attributes:
        mutation: ``"interpolate"`` (``(1-F) x_i + F x_r``, the released code), ``"de"``
            (``x_r1 + F (x_r2 - x_r3)``, the paper's Eq. 2) or ``"pbest"`` (JADE's
            current-to-pbest/1 with an archive of replaced parents; beyond the paper).
        F: interpolation weight (or DE scale).
        CR: binomial crossover rate.
        p_random: probability of a random reference (else the best other individual);
            ``None`` with ``n_generations`` uses the released schedule ``0.5/(G-g) + 0.5``.
        n_generations: ``G`` for that schedule.
        bound_handling: ``"clip"`` or ``"reflect"``.
        adapt: ``"none"`` (the paper: fixed ``F`` and ``CR``) or ``"jde"``: each individual
            carries its own ``F`` and ``CR`` (stored in its trial's lineage); an offspring
            redraws each with probability 0.1 (F in [0.1, 1], CR in [0, 1]), else takes its
            parent's, and keeps them if it replaces the parent (Brest et al., 2006).
        p_best: ``"pbest"``'s greedy share: ``x_pbest`` is one of the best ``ceil(p_best P)``
            (at least 2).
        restart: collapse threshold (mean spread per coordinate relative to the bounds); below
            it an offspring is a Gaussian kick of the best individual. ``None``: never.
        init: ``"random"`` (uniform) or ``"perturbed"`` (copies of the given start points with
            a Gaussian step of 0.1 of the width) for the slots beyond the start points.
    """

    mutation: Mutation = "interpolate"
    F: float = field(default=0.5, metadata={RANGE: {"gt": 0, "le": 2}})
    CR: float = field(default=0.5, metadata={RANGE: {"ge": 0, "le": 1}})
    p_random: float | None = field(default=0.5, metadata={RANGE: {"ge": 0, "le": 1}})
    n_generations: int | None = field(default=None, metadata={RANGE: {"ge": 1}})
    bound_handling: BoundHandling = "clip"
    adapt: Adaptation = "none"
    p_best: float = field(default=0.2, metadata={RANGE: {"gt": 0, "le": 1}})
    restart: float | None = field(default=None, metadata={RANGE: {"gt": 0, "lt": 1}})
    init: InitialFill = "random"

    def __post_init__(self) -> None:
        if self.mutation == "interpolate" and not 0.0 < self.F <= 1.0:
            raise ConfigError(f"F={self.F!r} is invalid: interpolation needs 0 < F <= 1")
        for item in fields(self):
            value, bounds = getattr(self, item.name), item.metadata.get(RANGE)
            if bounds is not None and value is not None and not _within(value, bounds):
                raise ConfigError(
                    f"{item.name}={value!r} is invalid: expected {_range_text(item.name, bounds)}"
                )
            allowed = _CHOICES.get(item.name)
            if allowed is not None and value not in allowed:
                raise ConfigError(f"{item.name}={value!r} is invalid: expected {_or(allowed)}")
        if self.p_random is None and (self.n_generations is None or self.n_generations < 1):
            raise ConfigError(
                "p_random=None selects the released code's schedule p = 0.5/(G-g) + 0.5, "
                f"which needs n_generations >= 1 (got {self.n_generations!r})"
            )

    def options(self) -> dict[str, Any]:
        """The hyperparameters by name (what the samplers and ``[study.evolver]`` take)."""
        return {name: getattr(self, name) for name in HYPERPARAMETERS}

    def with_options(self, **options: Any) -> EvolverConfig:
        """This config with ``options`` replaced; an unknown name raises :class:`ConfigError`
        naming the valid ones."""
        unknown = sorted(set(options) - set(HYPERPARAMETERS))
        if unknown:
            raise ConfigError(
                f"unknown Evolver hyperparameter(s) {', '.join(unknown)}; expected "
                f"{', '.join(HYPERPARAMETERS)}"
            )
        return replace(self, **options) if options else self

    def p_random_at(self, generation: int) -> float:
        """Probability of a random (rather than the best) reference in ``generation``."""
        if self.p_random is not None:
            return self.p_random
        assert self.n_generations is not None
        remaining = self.n_generations - generation
        return 1.0 if remaining <= 0 else 0.5 / remaining + 0.5


#: Evolver's hyperparameters by name, in declaration order.
HYPERPARAMETERS: tuple[str, ...] = tuple(f.name for f in fields(EvolverConfig))
# The allowed values of each Literal-typed hyperparameter (mutation, bound_handling, ...)
_CHOICES = {
    name: get_args(hint)
    for name, hint in get_type_hints(EvolverConfig).items()
    if get_origin(hint) is Literal
}
_COMPARE = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}


def _within(value: float, bounds: dict[str, float]) -> bool:
    return all(_COMPARE[kind](value, bound) for kind, bound in bounds.items())


def _range_text(name: str, bounds: dict[str, float]) -> str:
    """A field's range in words: ``0 < F <= 2``, ``1 <= n_generations``."""
    text = name
    for kind, sign in (("gt", "<"), ("ge", "<=")):
        if kind in bounds:
            text = f"{bounds[kind]} {sign} {text}"
    for kind, sign in (("lt", "<"), ("le", "<=")):
        if kind in bounds:
            text = f"{text} {sign} {bounds[kind]}"
    return text


def _or(allowed: tuple[Any, ...]) -> str:
    """``'clip' or 'reflect'``, ``'interpolate', 'de' or 'pbest'``."""
    words = [repr(a) for a in allowed]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"
