"""The model zoo: one fine-tuned classification expert per domain, all from one base.

Every expert starts from the same base weights and the same seeded head initialization, so
their heads (and bodies) can be merged. Each is cached as a Hugging Face directory
``zoo_dir()/<recipe name>/<domain>/`` with ``card.json``; a cached expert whose recipe hash
matches is reused, and a changed recipe (or changed data) rebuilds it.

Parts: :mod:`~evolver_opt.zoo.recipe` (the ``[zoo]`` table), :mod:`~evolver_opt.zoo.train`
(fine-tuning one expert), :mod:`~evolver_opt.zoo.build` (the cached experts and their cards),
:mod:`~evolver_opt.zoo.matrix` (every expert on every task). This front re-exports the names
other modules use.
"""

from __future__ import annotations

from evolver_opt.zoo.build import (
    CARD,
    ZOO_FORMAT,
    base_checkpoint,
    build_expert,
    build_zoo,
    expert_hash,
    load_expert,
    needs_build,
    read_card,
    zoo_eta,
)
from evolver_opt.zoo.recipe import ZooRecipe, load_recipe, matrix_heads, resolve_base
from evolver_opt.zoo.train import init_new_parameters, load_base

__all__ = [
    "CARD",
    "ZOO_FORMAT",
    "ZooRecipe",
    "base_checkpoint",
    "build_expert",
    "build_zoo",
    "expert_hash",
    "init_new_parameters",
    "load_base",
    "load_expert",
    "load_recipe",
    "matrix_heads",
    "needs_build",
    "read_card",
    "resolve_base",
    "zoo_eta",
]
