"""``evolver-opt compare``: every sampler and seed on one study, one storage, one report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from evolver_opt.cli._options import (
    SEARCH_LABEL,
    dev_per_split_option,
    n_trials_option,
    precision_option,
    progress_option,
    report_folder_option,
    storage_option,
    study_file_argument,
    test_per_split_option,
    threads_option,
)
from evolver_opt.search.samplers import SAMPLER_NAMES

if TYPE_CHECKING:
    from evolver_opt.experiments.rows import Row


@click.command()
@study_file_argument
@click.option(
    "--samplers",
    default="evolver,cmaes,random,tpe,ng:NGOpt",
    show_default=True,
    help="Comma-separated, of: " + " | ".join(SAMPLER_NAMES),
)
@n_trials_option("Trials per study (default: the study's n_trials).")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True)
@storage_option
@report_folder_option(f"runs/compare-{SEARCH_LABEL}")
@click.option(
    "--granularity",
    type=click.Choice(["model", "layer", "tensor", "element"]),
    default=None,
    help="Override the study file's granularity.",
)
@click.option(
    "--form",
    default=None,
    help="Override the study file's form: what the coefficients weigh (task_arithmetic, "
    "average, a merge method with parts such as tsv_m, iso_cts, wudi, regmean, or a blend of "
    "them such as iso_cts+wudi).",
)
@dev_per_split_option
@test_per_split_option
@click.option(
    "--tuned-baselines",
    is_flag=True,
    help="Also the static merges tuned on dev (task arithmetic's lambda, TIES and DARE's "
    "density and lambda, from grids), Fisher and RegMean (each expert's statistics on 256 of "
    "its training examples, cached next to it).",
)
@precision_option
@progress_option
@threads_option
def compare(
    study_file: str,
    samplers: str,
    n_trials: int | None,
    seeds: int,
    storage: str | None,
    out: str | None,
    granularity: str | None,
    form: str | None,
    dev_per_split: int | None,
    test_per_split: int | None,
    tuned_baselines: bool,
    precision: str | None,
    progress: bool,
) -> None:
    """Compare samplers on STUDY_FILE; writes report.md, results.json and plots."""
    import optuna

    from evolver_opt.cli._shared import invoked_command, load_study_file, setting_up
    from evolver_opt.errors import EvolverError
    from evolver_opt.experiments.compare import run_compare
    from evolver_opt.paths import runs_dir
    from evolver_opt.reports.report import write_report
    from evolver_opt.runtime.signals import Terminated
    from evolver_opt.search.objective import build_setup
    from evolver_opt.search.runner import preflight

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = [s.strip() for s in samplers.split(",") if s.strip()]
    try:
        config = load_study_file(
            study_file,
            precision,
            granularity=granularity,
            form=form,
            dev_per_split=dev_per_split,
            test_per_split=test_per_split,
        )
        budget = n_trials or config.n_trials
        preflight(config, names, budget=budget, storage=storage, warn=click.echo)  # typos now
        click.echo(setting_up(config))
        setup = build_setup(config)
        rows = run_compare(
            setup,
            names,
            seeds=seeds,
            n_trials=budget,
            storage=storage,
            echo=click.echo,
            progress=progress,
            tuned_baselines=tuned_baselines,
        )
    except EvolverError as exc:
        raise click.ClickException(str(exc)) from None
    except Terminated as exc:  # SIGTERM / Ctrl-C: the trials in flight were failed, re-queued
        click.echo(
            f"{exc}; the trials in flight were failed and re-queued; rerun to resume", err=True
        )
        raise SystemExit(143) from None
    folder = Path(out) if out else runs_dir() / f"compare-{config.search_label}"
    title = f"{config.name} ({config.granularity})"
    if config.dev_per_split:
        title = f"{config.name} ({config.granularity}, dev per split {config.dev_per_split})"
    command = invoked_command()
    notes = baseline_notes(rows)
    from evolver_opt.runtime.storage import default_url

    report = write_report(
        rows, folder, title=title, command=command, notes=notes,
        storage=storage or default_url(),
    )  # fmt: skip
    click.echo(report.read_text())
    click.echo(f"wrote {report}")


def baseline_notes(rows: Sequence[Row]) -> list[str]:
    """The report's notes on the static rows: each tuned one's chosen parameters."""
    tuned = [r for r in rows if r.kind == "static" and (r.params or r.grid)]
    if not tuned:
        note = "static rows use each method's default parameters; --tuned-baselines adds them"
        return [note + " tuned on dev, and Fisher and RegMean."]
    from evolver_opt.experiments.baselines import describe

    return [describe(r) for r in tuned]
