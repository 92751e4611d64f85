"""Reference rows (static merges, experts) of a compare, cached on disk.

A compare scores its reference rows on dev and test; they do not depend on the searches, so a
rerun or a resumed compare of the same setup reads them back instead of scoring them again.
The file is named by a hash of everything a row depends on: the study's identity, the expert
files, the dev and test samples, the row's kind, name and parameters, and the torch build
(``cache_dir()/compare-rows/<hash>.json``). A file that does not parse or does not hold a row
of the expected kind and name is ignored and rewritten.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from evolver_opt.experiments.rows import Row, TestReporter
from evolver_opt.paths import cache_dir
from evolver_opt.search.setup_key import digest, setup_payload

FOLDER = "compare-rows"
FORMAT = 1


def row_key(setup: Any, reporter: TestReporter, kind: str, name: str, extra: Any = None) -> str:
    """The hash of everything reference row ``(kind, name)`` depends on."""
    return digest({
        "format": FORMAT,
        **setup_payload(setup),
        "test": [s.fingerprint for s in reporter.evaluator.splits.values()],
        "row": [kind, name, extra],
    })  # fmt: skip


def cached_rows(
    setup: Any,
    reporter: TestReporter,
    kind: str,
    name: str,
    compute: Callable[[], list[Row]],
    extra: Any = None,
) -> list[Row]:
    """``compute()``'s rows, read from the cache when this setup scored them before."""
    path = cache_dir() / FOLDER / f"{row_key(setup, reporter, kind, name, extra)[:32]}.json"
    rows = _load(path, kind)
    if rows is None:
        rows = compute()
        _save(path, rows)
    return rows


def _load(path: Path, kind: str) -> list[Row] | None:
    fields = set(Row.__dataclass_fields__)
    try:
        data = json.loads(path.read_text())
        rows = [Row(**{k: v for k, v in r.items() if k in fields}) for r in data["rows"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ok = rows and all(
        r.kind == kind
        and isinstance(r.best_dev, (int, float))
        and math.isfinite(r.best_dev)
        and all(isinstance(v, (int, float)) for v in r.test.values())
        for r in rows
    )
    return rows if ok else None


def _save(path: Path, rows: list[Row]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".rows-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({"rows": [asdict(r) for r in rows]}, f)
        os.replace(tmp, path)
    except OSError:
        pass  # the cache only saves time
