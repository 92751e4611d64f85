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
* a blend of such methods (``"iso_cts+wudi+tsv_m"``): the coefficients weigh each method's
  whole merge (the sum of its parts) per group, so each method's static merge at scale
  ``lambda`` is the point with ``lambda`` in its row and 0 elsewhere, and a per-layer mix of
  the methods is a point too. Each method's scale is chosen on its dev grid (in float32, as
  the tuned baselines; cached on disk by :mod:`evolver_opt.search.blend_scales`); the start
  points are each method at its chosen scale, every pair half and half, and all of them in
  equal shares, the best single method last.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from evolver_opt.core.genome import Genome
from evolver_opt.errors import ConfigError
from evolver_opt.search.form_cache import form_key, load_form_rows, save_form_rows

COEFFICIENT_FORMS = ("task_arithmetic", "average")
BLEND = "+"  # "iso_cts+wudi": a blend of those methods' merges
LINEAR_SEEDS = ("average", "task_arithmetic")
EXAMPLES_OPTION = "examples_per_expert"  # form_options key: training examples per expert


def form_method(form: str) -> str | None:
    """The engine form the coefficients weigh: a merge method's parts, a blend of methods'
    merges (``"iso_cts+wudi"``), or None for the experts' task vectors."""
    return None if form in COEFFICIENT_FORMS else form


def blend_methods(form: str | None) -> tuple[str, ...]:
    """The methods a blend form mixes (``()`` when the form is not a blend)."""
    return tuple(form.split(BLEND)) if form and BLEND in form else ()


def form_methods_of(form: str | None) -> tuple[str, ...]:
    """Every merge method whose parts a form needs: a blend's methods, a method form's own."""
    method = form_method(form) if form is not None else None
    return () if method is None else (blend_methods(method) or (method,))


def check_form(form: str, seed_merges: tuple[str, ...], options: dict[str, Any]) -> None:
    """Refuse an unknown form, seeds it cannot express and options it does not take."""
    from evolver_opt.merge.methods import form_methods, method_class

    valid = [*COEFFICIENT_FORMS, *form_methods()]
    parts = blend_methods(form)
    if parts:
        bad = [m for m in parts if m not in form_methods()]
        if bad or len(parts) < 2 or len(set(parts)) < len(parts):
            raise ValueError(
                f"form {form!r}: a blend names two or more different methods of "
                f"{form_methods()} joined by {BLEND!r}; {bad or 'a method repeats'} is not"
            )
        if tuple(seed_merges) != (form,):
            raise ValueError(
                f"form {form!r} starts from its methods' tuned merges and their blends: give "
                f"seed_merges = [{form!r}] or leave it out, got {list(seed_merges)}"
            )
        if options:
            raise ValueError(f"form {form!r} (a blend) takes no form_options, got {options}")
        return
    if form not in valid:
        raise ValueError(f"form {form!r} is not one of {valid} (or a blend such as 'tsv_m+wudi')")
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
    """Compute the form's parts once (in float32) and add them to the setup's engine; a blend
    adds each method's form, then its own rows: each method's whole merge at scale 1."""
    form = form_method(setup.config.form)
    if form is None or form in setup.engine.forms:
        return
    methods = blend_methods(form)
    if not methods:
        _build_method_form(setup, form, dict(setup.config.form_options), echo)
        return
    engine = setup.engine
    rows = []
    for method in methods:
        _build_method_form(setup, method, {}, echo)
        parts = engine.form_rows(method)  # base + part_i
        rows.append(parts.sum(0) - (parts.shape[0] - 1) * engine.stacked[0])
    genome = Genome(methods, engine.genome.groups)
    engine.add_form_rows(form, torch.stack(rows), made_by=(form,), genome=genome)


def _build_method_form(setup: Any, method: str, options: dict, echo: Callable[[str], Any]) -> None:
    engine = setup.engine
    if method in engine.forms:
        return
    from evolver_opt.merge import get_method
    from evolver_opt.merge.methods import method_class

    given = dict(options)
    n_examples = int(options.pop(EXAMPLES_OPTION, 256))
    cls = method_class(method)
    if cls.data is not None:
        options.update(method_data(setup, method, n_examples, echo))
    made_by = (method, sorted(given.items()), n_examples)
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


def blend_start_points(scales: dict[str, tuple[float, float]], n_groups: int) -> dict:
    """Name -> coefficients ``(methods, groups)``: each method alone at its tuned scale, each
    pair half and half, all in equal shares; the best single method on dev last (CMA-ES's x0)."""
    methods = list(scales)
    one = {m: np.eye(len(methods))[k][:, None] * scales[m][0] for k, m in enumerate(methods)}
    points: dict[str, np.ndarray] = {}
    for a, b in itertools.combinations(methods, 2):
        points[f"{a}/2+{b}/2"] = np.repeat((one[a] + one[b]) / 2, n_groups, axis=1)
    if len(methods) > 2:
        share = sum(one.values()) / len(methods)
        points["+".join(f"{m}/{len(methods)}" for m in methods)] = np.repeat(share, n_groups, 1)
    # ascending dev, the best last (of equal ones, the first in the blend's order)
    for m in sorted(methods, key=lambda m: (scales[m][1], -methods.index(m))):
        points[f"{m}(lambda={scales[m][0]:g})"] = np.repeat(one[m], n_groups, axis=1)
    return points


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
