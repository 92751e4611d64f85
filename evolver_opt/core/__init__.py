"""The Evolver algorithm (numpy only, ask/tell, JSON state, (seed, index) randomness) and the
coefficient layout it searches (:class:`Genome`)."""

from __future__ import annotations

from evolver_opt.core.config import EvolverConfig
from evolver_opt.core.evolver import Candidate, Evolver
from evolver_opt.core.genome import Genome
from evolver_opt.core.operators import Offspring, choose_target, make_offspring

__all__ = [
    "Candidate",
    "Evolver",
    "EvolverConfig",
    "Genome",
    "Offspring",
    "choose_target",
    "make_offspring",
]
