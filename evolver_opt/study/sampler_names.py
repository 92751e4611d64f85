"""The sampler names every command accepts (no imports: ``--help`` lists them from here)."""

from __future__ import annotations

SAMPLER_NAMES = (
    "evolver", "evolver-plus", "cmaes", "cmaes-sep", "random", "tpe", "ng:NAME", "evolver-element", "evolver-merger:METHOD",
    "optuna-cmaes-unsafe-pickle", "optuna-cmaes-sep-unsafe-pickle",
)  # fmt: skip

# The coefficient Evolver samplers (EvolverSampler): the paper's and the variants' preset.
COEFFICIENT_EVOLVERS = ("evolver", "evolver-plus")
