"""The one door to test splits: reporting code reads them here, and nothing selects on them."""

from __future__ import annotations

from pathlib import Path

from evolver_opt.data.api import REPORT_ONLY_SPLIT, SELECTABLE_SPLITS, Split, read_split
from evolver_opt.errors import ConfigError


def load_test_split(domain: str, *, data_dir: Path | None = None) -> Split:
    """The ``test`` split of ``domain`` for reporting; it raises ``SplitError`` if selected on."""
    return read_split(domain, REPORT_ONLY_SPLIT, data_dir)


def load_for_report(domain: str, name: str, *, data_dir: Path | None = None) -> Split:
    """Any named split for a report (``dev`` or ``test``)."""
    if name not in (*SELECTABLE_SPLITS, REPORT_ONLY_SPLIT):
        raise ConfigError(f"unknown split {name!r}; expected dev or test")
    return read_split(domain, name, data_dir)
