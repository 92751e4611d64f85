"""evolver-opt: fuse fine-tuned models by evolving their merge weights (Evolver, Du et al. 2024).

The public names are imported lazily, so ``import evolver_opt`` stays cheap and never pulls
torch or nevergrad in before they are used.
"""

from __future__ import annotations

import importlib
from typing import Any

from evolver_opt._version import __version__

_EXPORTS = {
    "Evolver": "evolver_opt.core.evolver",
    "EvolverConfig": "evolver_opt.core.config",
    "offspring_info": "evolver_opt.integrations.optuna_sampler",
    "EvolverSampler": "evolver_opt.integrations.optuna_sampler",
    "NevergradSampler": "evolver_opt.integrations.nevergrad",
    "ReplayCmaEsSampler": "evolver_opt.integrations.cma",
    "register_nevergrad": "evolver_opt.integrations.nevergrad",
    "open_storage": "evolver_opt.runtime.storage",
    "flush_params": "evolver_opt.runtime.storage",
    "EvolverError": "evolver_opt.errors",
    "ConfigError": "evolver_opt.errors",
    "StateError": "evolver_opt.errors",
    "CheckpointError": "evolver_opt.errors",
    "StorageError": "evolver_opt.errors",
    "SplitError": "evolver_opt.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]  # noqa: PLE0605 - the lazy exports above


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'evolver_opt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
