"""The precision check's result, cached on disk so a rerun of the same setup skips it.

Scoring every start point in bfloat16 and in float32 costs two dev passes per start point,
minutes on a CPU. The result depends only on the study's identity, the experts' files, the
start points, the dev sample, the torch build and the CPU or GPU; the cache file is named by a
hash of those (``cache_dir()/precision-checks/<hash>.json``). A file that does not parse or
validate is ignored (and rewritten); nothing read from it is trusted beyond its checked fields.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from evolver_opt.evaluation.precision import hardware_bf16
from evolver_opt.paths import cache_dir
from evolver_opt.search.attributes import PrecisionCheck
from evolver_opt.search.setup_key import digest, setup_payload

FOLDER = "precision-checks"
FORMAT = 1


def check_key(setup: Any, points: Mapping[str, np.ndarray], threshold: float) -> str:
    """The hash of everything the check's outcome depends on."""
    return digest({
        "format": FORMAT,
        **setup_payload(setup),
        "points": {n: np.round(np.asarray(c, float), 12).tolist() for n, c in points.items()},
        "threshold": threshold,
        "hardware": hardware_bf16(str(setup.engine.device)),
    })  # fmt: skip


def _path(key: str) -> Path:
    return cache_dir() / FOLDER / f"{key[:32]}.json"


def load_check(key: str, setting: str) -> PrecisionCheck | None:
    """The cached check for ``key`` (configured ``setting``), or None when absent or bad."""
    try:
        data = json.loads(_path(key).read_text())
        check = PrecisionCheck(
            setting=str(data["setting"]), used=str(data["used"]), reason=str(data["reason"]),
            threshold=float(data["threshold"]),
            agreement={str(k): float(v) for k, v in dict(data["agreement"]).items()},
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None
    valid = (
        data.get("key") == key
        and check.setting == setting
        and check.used in ("fp32", "bf16")
        and all(0.0 <= v <= 1.0 for v in check.agreement.values())
    )
    return check if valid else None


def save_check(key: str, check: PrecisionCheck) -> None:
    """Write the check atomically (a unique temporary name, then rename); errors are ignored:
    the cache only saves time."""
    path = _path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".check-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({**check.as_json(), "key": key}, f)
        os.replace(tmp, path)
    except OSError:
        pass
