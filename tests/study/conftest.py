"""Fixtures shared by the study tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def world(study_env, tmp_path) -> dict:
    """The tiny world with its own copies of the experts (statistics are written next to them)."""
    copy = dict(study_env["world"])
    copy["experts"] = {
        d: Path(shutil.copytree(p, tmp_path / "experts" / d)) for d, p in copy["experts"].items()
    }
    return copy
