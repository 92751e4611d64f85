"""Study forms: what a trial's coefficients weigh, and where a search starts.

* ``task_arithmetic`` (and ``average``, each group normalized): the experts' task vectors;
  the start points are each expert alone and the ``seed_merges`` (linear methods:
  ``average``, ``task_arithmetic``).
* a merge method with per-task parts (``tsv_m``, ``iso_c``, ``iso_cts``, ``wudi``,
  ``regmean``, ``regmean_pp``, ``ties``, ``dare``; the registry's ``form_methods()``): the
  coefficients weigh that method's parts per (task, group), so the method's own merge at
  scale ``lambda`` is the point where every coefficient is ``lambda``. The parts are computed
  once per process at setup. The start points are the method at every scale of its dev grid
  (the best of them is the tuned static merge, so no search starts below it), the scale
  nearest 1 last (CMA-ES starts there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from evolver_opt.errors import ConfigError
from evolver_opt.search.form_cache import form_key, load_form_rows, save_form_rows

COEFFICIENT_FORMS = ("task_arithmetic", "average")
LINEAR_SEEDS = ("average", "task_arithmetic")
EXAMPLES_OPTION = "examples_per_expert"  # form_options key: training examples per expert


def form_method(form: str) -> str | None:
    """The merge method whose parts the form weighs (None: the experts' task vectors)."""
    return None if form in COEFFICIENT_FORMS else form


def check_form(form: str, seed_merges: tuple[str, ...], options: dict[str, Any]) -> None:
    """Refuse an unknown form, seeds it cannot express and options it does not take."""
    from evolver_opt.merge.methods import form_methods, method_class

    valid = [*COEFFICIENT_FORMS, *form_methods()]
    if form not in valid:
        raise ValueError(f"form {form!r} is not one of {valid}")
    method = form_method(form)
    if method is None:
        bad = [s for s in seed_merges if s not in LINEAR_SEEDS]
        if bad:
            raise ValueError(
                f"seed_merges {bad} are not task-arithmetic coefficients (only "
                f"{list(LINEAR_SEEDS)} are); set form = {bad[0]!r} to search around that merge"
            )
        if options:
            raise ValueError(f"form_options {options} need a method form, not {form!r}")
        return
    if tuple(seed_merges) != (method,):
        raise ValueError(
            f"form {form!r} starts from its own merge at every scale of its dev grid: give "
            f"seed_merges = [{method!r}] or leave it out, got {list(seed_merges)}"
        )
    cls = method_class(method)
    allowed = set(cls.params) - {"lambda_", "examples", "grams", "fishers", "weights"}
    allowed |= {EXAMPLES_OPTION} if cls.data else set()
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"form {form!r} takes form_options {sorted(allowed)}, got {unknown}")


def start_scales(method: str) -> list[float]:
    """The method's dev-grid scales (1.0 when it has none), the one nearest 1 last."""
    from evolver_opt.merge.methods import method_class

    scales = sorted({float(p["lambda"]) for p in method_class(method).grid if "lambda" in p})
    scales = scales or [1.0]
    nearest = min(scales, key=lambda s: (abs(s - 1.0), s))
    return [s for s in scales if s != nearest] + [nearest]


def form_start_points(form: str, shape: tuple[int, int], bounds: tuple[float, float]) -> dict:
    """Name -> coefficients of a method form's start points (clipped to ``bounds``, deduped)."""
    method = form_method(form)
    assert method is not None
    points: dict[str, np.ndarray] = {}
    for scale in start_scales(method):
        clipped = float(np.clip(scale, *bounds))
        points.pop(f"{method}(lambda={clipped:g})", None)  # a duplicate moves last
        points[f"{method}(lambda={clipped:g})"] = np.full(shape, clipped)
    return points


def build_form(setup: Any, echo: Callable[[str], Any] = print) -> None:
    """Compute the form's parts once (in float32) and add them to the setup's engine."""
    config = setup.config
    method = form_method(config.form)
    if method is None or method in setup.engine.forms:
        return
    from evolver_opt.merge import get_method
    from evolver_opt.merge.methods import method_class

    options = dict(config.form_options)
    n_examples = int(options.pop(EXAMPLES_OPTION, 256))
    cls = method_class(method)
    if cls.data is not None:
        options.update(method_data(setup, method, n_examples, echo))
    made_by = (method, sorted(config.form_options.items()), n_examples)
    engine = setup.engine
    key = form_key(engine, made_by) if cls.data is None else None  # data methods: not cached
    rows = load_form_rows(key, engine) if key is not None else None
    if rows is not None:
        echo(f"form {method}: each expert's part of the merge read from the cache")
        engine.add_form_rows(method, rows, made_by=made_by)
        return
    echo(f"form {method}: computing each expert's part of the merge (once per process)")
    with engine.model_precision(torch.float32):
        engine.add_form(method, get_method(method).task_parts(engine, **options), made_by=made_by)
    if key is not None:
        save_form_rows(key, engine.form_rows(method))


def method_data(setup: Any, method: str, n_examples: int, echo: Callable[[str], Any]) -> dict:
    """The keyword arguments that give a data method what it needs, from ``n_examples`` of
    each expert's training split: its cached statistics, or the examples themselves."""
    from evolver_opt.merge.methods import method_class
    from evolver_opt.search.merge_stats import (
        StoredStats,
        ensure_stats,
        spec_for,
        training_batches,
        training_sample,
    )

    cls = method_class(method)
    spec = spec_for(setup, n_examples)
    if cls.data == "statistics":
        paths = ensure_stats(setup, method, spec, echo)
        return {cls.statistics_argument: StoredStats(setup.engine, method, paths)}
    if cls.data == "examples":
        return {
            "examples": {
                name: training_batches(
                    setup, training_sample(name, n_examples), spec.batch_size, spec.max_length
                )
                for name in setup.engine.model_names
            }
        }
    raise ConfigError(f"method {method!r} needs data of kind {cls.data!r}, which is not supplied")
