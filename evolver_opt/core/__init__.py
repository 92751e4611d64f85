"""The Evolver algorithm (numpy only, ask/tell, JSON state, (seed, index) randomness) and the
coefficient layout it searches (:class:`Genome`)."""

from __future__ import annotations

from evolver_opt.core.evolver import (
    Candidate,
    Evolver,
    EvolverConfig,
    Offspring,
    choose_target,
    make_offspring,
)
from evolver_opt.core.genome import Genome

__all__ = [
    "Candidate",
    "Evolver",
    "EvolverConfig",
    "Genome",
    "Offspring",
    "choose_target",
    "make_offspring",
]
