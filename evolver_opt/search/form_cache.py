"""A data-free form's rows, cached on disk so a rerun of the same setup skips building them.

Iso-CTS, TSV-M or WUDI parts take a few SVDs or solves per matrix: tens of seconds on two
cores for MiniLM, at every process start. They depend only on the method and its options, the
base's and experts' files, the merged tensors (names and shapes), the rows' dtype and torch's
build; the file is ``cache_dir()/forms/<hash>.safetensors`` (safetensors: no pickle). A file
that does not open, or whose tensor is not the expected shape, dtype and finite, is ignored and
rewritten. Data methods (RegMean, RegMean++) are not cached here: their parts depend on the
training sample (their statistics have their own cache).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from evolver_opt.paths import cache_dir
from evolver_opt.search.setup_key import digest

FOLDER = "forms"
FORMAT = 1
TENSOR = "parts_rows"  # (N, P): base + each task's part, the engine's form rows without the base


def form_key(engine: Any, made_by: Any) -> str:
    """The hash of everything a data-free form's rows depend on."""
    from evolver_opt.search.merge_stats import expert_identity

    folders = [engine.checkpoints.base.path, *(m.path for m in engine.checkpoints.models)]
    return digest({
        "format": FORMAT,
        "made_by": made_by,
        "files": [expert_identity(Path(f)) for f in folders],
        "tensors": [list(engine.layout.names), [list(s) for s in engine.layout.shapes]],
        "dtype": str(engine.dtype),
        "torch": torch.__version__,
    })  # fmt: skip


def form_path(key: str) -> Path:
    return cache_dir() / FOLDER / f"{key[:32]}.safetensors"


def load_form_rows(key: str, engine: Any) -> torch.Tensor | None:
    """The cached ``(N, P)`` rows for ``key``, or None when absent or not valid for ``engine``
    (a damaged file gets one warning naming it)."""
    path = form_path(key)
    if not path.is_file():
        return None
    try:
        rows = load_file(path)[TENSOR]
    except (OSError, SafetensorError, KeyError) as exc:
        return _bad(path, f"does not open ({exc})")
    expected = (engine.n_models, engine.layout.numel)
    if tuple(rows.shape) != expected or rows.dtype != engine.dtype:
        return _bad(
            path, f"holds {tuple(rows.shape)} {rows.dtype}, expected {expected} {engine.dtype}"
        )
    if not torch.isfinite(rows).all():
        return _bad(path, "holds non-finite weights")
    return rows


def save_form_rows(key: str, rows: torch.Tensor) -> None:
    """Write ``rows`` atomically (a unique temporary name, then rename); errors are ignored:
    the cache only saves time."""
    path = form_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".form-", suffix=".safetensors")
        os.close(fd)
        save_file({TENSOR: rows.detach().cpu().contiguous()}, tmp)
        os.replace(tmp, path)
    except OSError:
        pass


def _bad(path: Path, why: str) -> None:
    warnings.warn(f"cached form {path} {why}: building the form again", stacklevel=3)
