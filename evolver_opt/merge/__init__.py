"""The merge engine: checkpoints -> stacked flat weights -> coefficients -> one working model.

``MergeEngine.from_dirs`` loads and checks a base and N fine-tuned checkpoints once;
``engine.apply(coefficients)`` writes a merge in place; static methods (``get_method``) are
baselines and seeds. Writing a merge out (Hugging Face folders, the model card, mergekit YAML)
is ``evolver_opt.export``.
"""

from __future__ import annotations

from evolver_opt.merge.checkpoints import CheckpointSet, load_checkpoints
from evolver_opt.merge.engine import MergeEngine
from evolver_opt.merge.methods import MergeMethod, MergeResult, get_method, list_methods

__all__ = [
    "CheckpointSet",
    "MergeEngine",
    "MergeMethod",
    "MergeResult",
    "get_method",
    "list_methods",
    "load_checkpoints",
]
