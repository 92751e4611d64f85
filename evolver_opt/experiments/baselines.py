"""Tuned static baselines (FusionBench's table): grids chosen on dev, the data methods.

Every registered method with a dev grid (its ``grid`` capability: task arithmetic's lambda,
TIES' and DARE's density and lambda, the scale of TSV-M, Iso-C, Iso-CTS and WUDI) is merged
at each grid point and scored by ``evaluate_dev`` (the setup's dev splits, nothing else); the
best point (the first of equal ones, in grid order) is the answer. The data methods (Fisher,
RegMean: each expert's statistics on a fixed sample of its own training split, cached next
to the expert by :mod:`evolver_opt.search.merge_stats`; RegMean++: that sample's batches) are
merged once; with separate heads each expert's data runs through its own head and only the
body is merged. Everything is merged and scored in float32. The test splits are read only
after every choice is made, for the report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from evolver_opt.data import require_selectable
from evolver_opt.errors import ConfigError
from evolver_opt.experiments.rows import Row, TestReporter
from evolver_opt.merge import get_method
from evolver_opt.merge.methods import MergeMethod, list_methods, method_class
from evolver_opt.search.forms import method_data
from evolver_opt.search.merge_stats import spec_for
from evolver_opt.search.objective import MergeSetup, evaluate_dev

TA_LAMBDAS = tuple(p["lambda"] for p in method_class("task_arithmetic").grid)
# the historical rows first (their order in earlier reports), then the rest by name
_FIRST = ("task_arithmetic", "ties", "dare", "fisher", "regmean")
DATA_METHODS = tuple(list_methods(lambda cls: cls.data is not None))
Grid = Sequence[Mapping[str, Any]]


def _ordered(names: Sequence[str]) -> list[str]:
    return sorted(names, key=lambda n: (_FIRST.index(n) if n in _FIRST else len(_FIRST), n))


def default_grids() -> dict[str, list[dict[str, Any]]]:
    """Method -> its dev grid, for every registered method that declares one (``lambda``
    scales the merged task vector; DARE's masks use seed 0)."""
    tuned = list_methods(lambda cls: bool(cls.grid) and cls.data is None)
    return {m: [dict(p) for p in method_class(m).grid] for m in _ordered(tuned)}


def data_methods_list() -> list[str]:
    """The methods that need the experts' data, merged once each (no grid)."""
    return _ordered(DATA_METHODS)


@dataclass
class Baseline:
    """A static merge chosen on dev: its row name, parameters, dev score and how to redo it."""

    name: str
    method: str
    params: dict[str, Any]
    dev: float
    apply: Callable[[], Any] = field(repr=False)
    grid: list[dict[str, Any]] = field(default_factory=list)  # every point: params and dev
    seconds: float = 0.0  # selection time (statistics, merges, dev scoring)


def split_methods(
    names: str | None,
) -> tuple[dict[str, list[dict[str, Any]]] | None, list[str] | None]:
    """``"tsv_m,regmean"`` as (grids, data methods) for :func:`select_baselines` (None, None:
    every method); a name with neither a grid nor a data requirement is refused."""
    if names is None:
        return None, None
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    grids, data = default_grids(), data_methods_list()
    unknown = [n for n in wanted if n not in grids and n not in data]
    if unknown or not wanted:
        raise ConfigError(
            f"--methods {names!r}: {unknown or 'nothing'} cannot be tuned; expected some of "
            f"{[*grids, *data]}"
        )
    return {n: grids[n] for n in wanted if n in grids}, [n for n in wanted if n in data]


def check_dev_only(setup: MergeSetup) -> None:
    """Refuse a selection evaluator that holds a test split (``SplitError``)."""
    for split in setup.evaluator.splits.values():
        require_selectable(split, "choosing a static baseline")


def search_grid(
    setup: MergeSetup, method: str, grid: Grid, echo: Callable[[str], Any] = print
) -> Baseline:
    """Merge and score every grid point on dev; the best point's ``apply`` merges it again."""
    check_dev_only(setup)
    start = time.perf_counter()
    merger = get_method(method)
    merge = _scaled_parts if _parts_write(merger) else _full_merge
    points = []
    for params in grid:
        merge(setup, merger, params)
        points.append({"params": dict(params), "dev": float(evaluate_dev(setup).score)})
    _drop_grid_forms(setup.engine)
    best = _argmax([p["dev"] for p in points])
    chosen = dict(points[best]["params"])
    echo(f"{method}: {_describe(chosen)} best of {len(points)} on dev ({points[best]['dev']:.4f})")

    def apply() -> None:
        merge(setup, merger, chosen)
        _drop_grid_forms(setup.engine)

    return Baseline(
        f"{method}(dev grid)", method, chosen, points[best]["dev"], apply, points,
        round(time.perf_counter() - start, 1),
    )  # fmt: skip


_GRID_FORM = "baselines:"  # the prefix of the forms a grid adds (one at a time)


def _drop_grid_forms(engine: Any) -> None:
    for name in [n for n in engine.forms if n.startswith(_GRID_FORM)]:
        engine.drop_form(name)


def _parts_write(merger: Any) -> bool:
    """The method writes ``base + lambda * sum(parts)``: its grid over ``lambda`` can reuse
    one computation of the parts."""
    return merger.has_parts() and type(merger).write is MergeMethod.write


def _full_merge(setup: MergeSetup, merger: Any, params: Mapping[str, Any]) -> None:
    merger.merge(setup.engine, **params)


def _scaled_parts(setup: MergeSetup, merger: Any, params: Mapping[str, Any]) -> None:
    """``base + lambda * sum(parts)`` through an engine form: the parts are computed once per
    setting of the other parameters (e.g. one SVD pass for TSV-M's whole lambda grid)."""
    engine = setup.engine
    rest = merger.check_params({k: v for k, v in params.items() if k != "lambda"})
    name = _GRID_FORM + json.dumps([merger.name, rest], sort_keys=True, default=str)
    if not rest and engine.form_made_by.get(merger.name) == (merger.name, [], 256):
        name = merger.name  # the study's own form, built with the defaults: the same parts
    if name not in engine.forms:
        _drop_grid_forms(engine)
        engine.add_form(name, merger.task_parts(engine, **rest))
    engine.apply(np.full(engine.genome.shape, float(params.get("lambda", 1.0))), form=name)


def data_baseline(
    setup: MergeSetup, method: str, n_examples: int = 256, echo: Callable[[str], Any] = print
) -> Baseline:
    """A data method (Fisher, RegMean, RegMean++) from each expert's training sample (cached
    statistics, or the sample's batches), scored on dev."""
    check_dev_only(setup)
    start = time.perf_counter()
    spec = spec_for(setup, n_examples)
    stats = method_data(setup, method, n_examples, echo)
    merger = get_method(method)
    result = merger.merge(setup.engine, **stats)
    dev = float(evaluate_dev(setup).score)
    params = {k: v for k, v in result.params.items() if v is not None}
    params.update(examples_per_expert=spec.n_examples, max_length=spec.max_length)
    if method != "fisher":  # Fisher takes one example at a time
        params["batch_size"] = spec.batch_size
    cls = method_class(method)
    if cls.statistics_argument:
        params["statistics"] = [str(p) for p in stats[cls.statistics_argument].paths]
    echo(f"{method}: dev {dev:.4f}")
    return Baseline(
        method, method, params, dev, lambda: merger.merge(setup.engine, **stats),
        seconds=round(time.perf_counter() - start, 1),
    )  # fmt: skip


def select_baselines(
    setup: MergeSetup,
    *,
    grids: Mapping[str, Grid] | None = None,
    data_methods: Sequence[str] | None = None,
    n_examples: int = 256,
    echo: Callable[[str], Any] = print,
) -> list[Baseline]:
    """Every tuned baseline, chosen on dev only (in float32)."""
    grids = default_grids() if grids is None else grids
    data_methods = data_methods_list() if data_methods is None else data_methods
    with setup.engine.model_precision(torch.float32):
        chosen = [search_grid(setup, m, g, echo) for m, g in grids.items()]
        chosen += [data_baseline(setup, m, n_examples, echo) for m in data_methods]
    return chosen


def baseline_rows(
    setup: MergeSetup,
    reporter: TestReporter | None = None,
    *,
    grids: Mapping[str, Grid] | None = None,
    data_methods: Sequence[str] | None = None,
    n_examples: int = 256,
    echo: Callable[[str], Any] = print,
) -> list[Row]:
    """The tuned baselines as compare rows (kind ``static``): chosen on dev, then each re-merged
    and scored once on the test splits in float32."""
    chosen = select_baselines(
        setup, grids=grids, data_methods=data_methods, n_examples=n_examples, echo=echo
    )
    reporter = reporter or TestReporter(setup)  # the test splits: from here on, reporting only
    rows = []
    with setup.engine.model_precision(torch.float32):
        for baseline in chosen:
            echo(f"{baseline.name}: scoring on the test splits")
            baseline.apply()
            rows.append(_row(baseline, reporter))
    return rows


def _row(baseline: Baseline, reporter: TestReporter) -> Row:
    scores, correct = reporter.score()
    test_in, test_out = reporter.summarize(scores)
    return Row(
        kind="static", name=baseline.name, seed=None, best_dev=baseline.dev, test_in=test_in,
        test_out=test_out, test=scores, trials=len(baseline.grid), wall_s=baseline.seconds,
        test_in_domain=list(reporter.in_domain), test_correct=correct,
        params=dict(baseline.params), grid=list(baseline.grid),
    )  # fmt: skip


def describe(row: Row) -> str:
    """One line for a report's notes: the row's chosen parameters and grid size."""
    params = {k: v for k, v in row.params.items() if k != "statistics"}
    grid = f", best of {len(row.grid)} grid points on dev" if row.grid else ""
    return f"{row.name}: {_describe(params)}{grid} (dev {row.best_dev:.4f})"


def _describe(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _argmax(values: Sequence[float]) -> int:
    """The index of the largest value, the first of equal ones."""
    return max(range(len(values)), key=values.__getitem__)
