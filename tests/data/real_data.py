"""The real archives for data tests: skipped locally when missing, a failure under ``CI=true``.

CI runs ``evolver-opt data prepare`` before pytest, so there the archives are always cached in
``data_dir()/archives``; a missing one means the preparation is broken, not that it was skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from evolver_opt.data import sources


def skip_or_fail(message: str) -> None:
    """``pytest.skip`` locally, ``pytest.fail`` under ``CI=true``."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI runs `evolver-opt data prepare` first", pytrace=False)
    pytest.skip(message)


def cached_archives(*names: str) -> Path:
    """The default archive cache, once it holds the named sources (default: all of them)."""
    from evolver_opt.paths import data_dir

    cached = data_dir() / "archives"
    wanted = [sources.SOURCES[n] for n in names or sources.SOURCES]
    missing = [s.filename for s in wanted if not (cached / s.filename).exists()]
    if missing:
        skip_or_fail(
            f"archives {missing} not cached in {cached}; run `evolver-opt data prepare` once"
        )
    return cached
