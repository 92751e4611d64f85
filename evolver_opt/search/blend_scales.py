"""A blend form's scales: each method's scale chosen on its dev grid, cached on disk.

At setup every blended method is merged at each scale of its dev grid and scored on dev in
float32, as the tuned baselines are: about 23 dev passes for Iso-CTS + WUDI + TSV-M, minutes on
a CPU, in every process (each worker of a study, each compare). The outcome depends only on
what the precision check's does (the study's identity, the experts' files, the dev sample,
torch's build), so it is cached the same way: ``cache_dir()/blend-scales/<hash>.json``. A file
that does not parse, or whose methods, scales or scores are not valid, is ignored and
rewritten.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evolver_opt.paths import cache_dir
from evolver_opt.search.forms import blend_methods, form_method
from evolver_opt.search.setup_key import digest, setup_payload

FOLDER = "blend-scales"
FORMAT = 1
Scales = dict[str, tuple[float, float]]  # method -> (scale, dev score)


def tune_blend_scales(
    setup: Any, score: Callable[[], float], echo: Callable[[str], Any] = print
) -> Scales:
    """Each blended method's scale chosen on its dev grid (clipped to the bounds): method ->
    (scale, dev score), merged and scored in float32 (the first of equal scores, in grid
    order); read from the cache when this setup chose them before."""
    key = digest({"format": FORMAT, **setup_payload(setup)})
    methods = blend_methods(form_method(setup.config.form))
    cached = _load(key, methods, setup.config.bounds)
    if cached is not None:
        echo(f"form {setup.config.form}: each method's scale read from the cache "
             + ", ".join(f"{m} {s:g}" for m, (s, _) in cached.items()))  # fmt: skip
        return cached
    chosen = _tune(setup, score, echo)
    _save(key, chosen)
    return chosen


def _tune(setup: Any, score: Callable[[], float], echo: Callable[[str], Any]) -> Scales:
    from evolver_opt.merge.methods import method_class

    engine, lo, hi = setup.engine, *setup.config.bounds
    chosen: Scales = {}
    with engine.model_precision(torch.float32):
        for method in blend_methods(form_method(setup.config.form)):
            grid = [float(p["lambda"]) for p in method_class(method).grid if "lambda" in p]
            scores: dict[float, float] = {}
            for scale in dict.fromkeys(float(np.clip(s, lo, hi)) for s in grid or [1.0]):
                engine.apply(np.full(engine.genome.shape, scale), form=method)
                scores[scale] = score()
            best = max(scores, key=scores.__getitem__)
            chosen[method] = (best, scores[best])
            echo(f"form {setup.config.form}: {method} lambda {best:g} on dev ({scores[best]:.4f})")
    return chosen


def _path(key: str) -> Path:
    return cache_dir() / FOLDER / f"{key[:32]}.json"


def _load(key: str, methods: tuple[str, ...], bounds: tuple[float, float]) -> Scales | None:
    try:
        data = json.loads(_path(key).read_text())
        scales = {str(m): (float(s), float(d)) for m, (s, d) in dict(data["scales"]).items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    valid = (
        data.get("key") == key
        and tuple(scales) == methods
        and all(math.isfinite(s) and bounds[0] <= s <= bounds[1] for s, _ in scales.values())
        and all(math.isfinite(d) for _, d in scales.values())
    )
    return scales if valid else None


def _save(key: str, scales: Scales) -> None:
    """Atomically (a unique temporary name, then rename); errors are ignored: the cache only
    saves time."""
    path = _path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".scales-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({"key": key, "scales": {m: list(v) for m, v in scales.items()}}, f)
        os.replace(tmp, path)
    except OSError:
        pass
