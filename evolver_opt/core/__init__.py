"""The Evolver algorithm: numpy only, ask/tell, JSON state, (seed, index) randomness."""

from __future__ import annotations

from evolver_opt.core.evolver import (
    Candidate,
    Evolver,
    EvolverConfig,
    Offspring,
    choose_target,
    make_offspring,
)

__all__ = ["Candidate", "Evolver", "EvolverConfig", "Offspring", "choose_target", "make_offspring"]
