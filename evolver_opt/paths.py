"""Where evolver-opt keeps its caches (data, model zoo) and runs by default."""

from __future__ import annotations

import os
import tempfile
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


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a unique temporary file beside it (fsynced, then
    renamed): ``path`` holds the old content or the new, never a part of either."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
