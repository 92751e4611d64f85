"""Where evolver-opt keeps its caches (data, model zoo) and runs by default."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of all caches: ``$EVOLVER_OPT_CACHE`` or ``~/.cache/evolver-opt``."""
    root = os.environ.get("EVOLVER_OPT_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "evolver-opt"


def data_dir() -> Path:
    """Prepared datasets (JSON Lines per domain and split)."""
    return cache_dir() / "data"


def zoo_dir() -> Path:
    """Fine-tuned experts, one Hugging Face directory each with a JSON card."""
    return cache_dir() / "zoo"


def runs_dir() -> Path:
    """Default home of study databases and reports: ``./runs``."""
    return Path(os.environ.get("EVOLVER_OPT_RUNS", "runs"))
