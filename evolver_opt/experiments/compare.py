"""The compare harness: every sampler and seed on one problem, in one storage, plus the static
merges and each expert alone as reference rows.

Selection is by dev score only; the test splits (in-domain and out-of-domain) are evaluated
once per row, for the final best-by-dev model, through the reporting door.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from evolver_opt.experiments.baselines import baseline_rows
from evolver_opt.experiments.eta import compare_eta
from evolver_opt.experiments.memory import PeakRSS, record_peak
from evolver_opt.experiments.row_cache import cached_rows
from evolver_opt.experiments.rows import Row, TestReporter
from evolver_opt.merge import get_method
from evolver_opt.merge.methods import list_methods, method_class
from evolver_opt.runtime.storage import open_storage
from evolver_opt.search.element import (
    ElementObjective,
    answer_curve,
    make_objective,
    resolve_sampler,
)
from evolver_opt.search.forms import form_methods_of
from evolver_opt.search.objective import MergeSetup, evaluate_dev
from evolver_opt.search.runner import (
    default_study_name,
    finished_count,
    open_setup_study,
    run_study,
)

# the untuned reference rows: the registry's methods marked ``reference``, historical order
STATIC_METHODS = tuple(
    sorted(
        list_methods(lambda cls: cls.reference),
        key=lambda n: ("average", "task_arithmetic", "ties", "dare", n).index(n),
    )
)


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def run_compare(
    setup: MergeSetup,
    samplers: Sequence[str],
    *,
    seeds: int,
    n_trials: int,
    storage: str | None,
    echo: Callable[[str], Any] = print,
    progress: bool = False,
    tuned_baselines: bool = False,
    static_methods: Sequence[str] = STATIC_METHODS,
) -> list[Row]:
    """Run every (sampler, seed) study to ``n_trials`` and score the reference rows (the
    untuned ``static_methods`` and each expert alone); with ``tuned_baselines`` also the static
    merges tuned on dev, Fisher and RegMean (experiments/baselines.py)."""

    if setup.precision is not None:
        echo(setup.precision.summary() + "; answers are re-scored in float32 for the report")
    reporter = TestReporter(setup)
    # first, and cached: a compare cut short or resumed has them, and a rerun skips them
    references = reference_rows(setup, reporter, echo, tuned_baselines, static_methods)
    rows = []
    resolved = [resolve_sampler(setup.config.granularity, s) for s in samplers]
    eta = compare_eta(  # the work left: the studies (the reference rows are done)
        setup, studies=seeds * len(resolved), n_trials=n_trials, references=0, tuned=False,
        own_form=False,
    )  # fmt: skip
    finished = _finished_before(setup, resolved, seeds, n_trials, storage)
    eta.skip(sum(finished.values()))  # a rerun's finished studies are not work left
    for seed in range(seeds):  # seed-major: a compare cut short has every sampler's first seeds
        for sampler in resolved:
            objective = make_objective(setup, sampler)  # weight-space samplers: ElementObjective
            study = open_setup_study(setup, sampler, seed=seed, storage=storage, budget=n_trials)
            done = finished_count(study)
            if done >= n_trials:
                echo(f"{study.study_name}: already finished ({done} trials); reporting it")
            else:
                echo(f"{study.study_name}: {done} of {n_trials} trials done, running the rest")
            with PeakRSS() as peak:
                if done < n_trials:  # a finished study shows no second, full progress bar
                    eta.start()
                    ran = run_study(study, objective, n_trials=n_trials, show_progress_bar=progress)
                    eta.ran(ran)
            eta.skip(min(done, n_trials) - finished.get(study.study_name, 0))
            echo(f"{study.study_name}: scoring its best trial on the test splits")
            with setup.engine.model_precision(torch.float32), eta.timed("answer"):
                row = _sampler_row(study, sampler, seed, setup, reporter, objective)
            if eta.message():
                echo(eta.message())
            row.peak_rss_mb = record_peak(study, peak)
            rows.append(row)
    return rows + references


def _finished_before(
    setup: MergeSetup, samplers: Sequence[str], seeds: int, n_trials: int, storage: str | None
) -> dict[str, int]:
    """Study name -> its trials when it already holds ``n_trials`` finished ones (read from the
    storage, nothing created; a SQLite file's folder is made, as every study's opening does)."""
    opened = open_storage(storage, heartbeat_interval=None)
    names = {default_study_name(setup.config, s, seed) for s in samplers for seed in range(seeds)}
    done = {}
    for summary in optuna.get_all_study_summaries(opened, include_best_trial=False):
        if summary.study_name in names and summary.n_trials >= n_trials:
            study_id = opened.get_study_id_from_name(summary.study_name)
            finished = opened.get_all_trials(study_id, deepcopy=False, states=FINISHED)
            if len(finished) >= n_trials:
                done[summary.study_name] = n_trials
    return done


def reference_rows(
    setup: MergeSetup,
    reporter: TestReporter,
    echo: Callable[[str], Any],
    tuned: bool,
    static_methods: Sequence[str] = STATIC_METHODS,
) -> list[Row]:
    """The static merges and each expert alone (dev and test), the tuned baselines when
    ``tuned`` (else, in a method form, that method tuned on dev: where the searches start);
    each read from the row cache when this setup scored it before."""
    names = [("static", m) for m in static_methods]
    names += [("expert", name) for name in setup.engine.model_names]
    rows: list[Row] = []
    for k, (kind, name) in enumerate(names, start=1):
        echo(f"reference rows {k}/{len(names)}: {kind} {name} (dev and test)")

        def one(kind: str = kind, name: str = name) -> list[Row]:
            with setup.engine.model_precision(torch.float32):
                if kind == "static":
                    get_method(name).merge(setup.engine)
                else:
                    setup.engine.apply(setup.engine.one_hot(name))
                return [_reference_row(kind, name, setup, reporter)]

        rows += cached_rows(setup, reporter, kind, name, one)
    if tuned:
        echo("tuned baselines: grids on dev, the data methods (then test)")
        return rows + cached_rows(
            setup, reporter, "static", "tuned", lambda: baseline_rows(setup, reporter, echo=echo)
        )
    for method in form_methods_of(setup.form):  # where the searches start: tuned on dev
        echo(f"reference row: {method} tuned on dev (the static merge the searches start from)")
        own = own_method(method)
        rows += cached_rows(
            setup, reporter, "static", f"{method}(dev grid)",
            lambda own=own: baseline_rows(setup, reporter, echo=echo, **own), extra=own,
        )  # fmt: skip
    return rows


def own_method(method: str) -> dict[str, Any]:
    """``baseline_rows`` arguments that tune ``method`` alone (its grid, or its data)."""
    grid = [dict(p) for p in method_class(method).grid]
    return {"grids": {method: grid}, "data_methods": []} if grid else {
        "grids": {}, "data_methods": [method]}  # fmt: skip


def _sampler_row(
    study: optuna.Study,
    sampler: str,
    seed: int,
    setup: MergeSetup,
    reporter: TestReporter,
    objective: object = None,
) -> Row:
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    values = [
        t.value if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None else -np.inf
        for t in trials
    ]
    wall = sum(
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.datetime_start is not None and t.datetime_complete is not None
    )
    seen = [t.user_attrs.get("examples_seen", 0) for t in trials]
    examples = np.cumsum(seen).tolist()
    dev_total = setup.evaluator.n_examples(setup.dev_keys)
    curve = np.maximum.accumulate(values).tolist()
    best_dev_fp32 = None
    if isinstance(objective, ElementObjective):  # the answer: best individual / merged population
        best_dev = objective.apply_answer(study)
        curve = answer_curve(study, objective.mode.mode)
    else:
        best = study.best_trial
        setup.apply(best.params)
        best_dev = best.value
        if setup.config.precision == "bf16":
            best_dev_fp32 = float(evaluate_dev(setup).score)
    scores, correct = reporter.score()
    test_in, test_out = reporter.summarize(scores)
    return Row(
        kind="sampler", name=sampler, seed=seed, best_dev=float(best_dev), test_in=test_in, test_out=test_out,
        test=scores, trials=len(trials), wall_s=round(wall, 1), study_name=study.study_name,
        curve=curve, examples=[int(e) for e in examples], test_in_domain=list(reporter.in_domain),
        test_correct=correct, best_dev_fp32=best_dev_fp32,
        pruned=sum("pruned" in t.user_attrs for t in trials),
        race_lost=sum("race_lost" in t.user_attrs for t in trials),
        examples_saved=_saved(trials, dev_total),
    )  # fmt: skip


def _saved(trials: Sequence[optuna.trial.FrozenTrial], dev_total: int) -> float:
    """The fraction of dev forward passes that racing and pruning spared the scored trials."""
    seen = [t.user_attrs["examples_seen"] for t in trials if "examples_seen" in t.user_attrs]
    return round(1 - sum(seen) / (dev_total * len(seen)), 4) if seen and dev_total else 0.0


def _reference_row(kind: str, name: str, setup: MergeSetup, reporter: TestReporter) -> Row:
    dev = evaluate_dev(setup).score
    scores, correct = reporter.score()
    test_in, test_out = reporter.summarize(scores)
    return Row(
        kind=kind,
        name=name,
        seed=None,
        best_dev=float(dev),
        test_in=test_in,
        test_out=test_out,
        test=scores,
        test_in_domain=list(reporter.in_domain),
        test_correct=correct,
    )
