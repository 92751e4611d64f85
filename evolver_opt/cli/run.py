"""``evolver-opt run STUDY.toml``: create or resume one merge-search study."""

from __future__ import annotations

import click

from evolver_opt.cli._options import (
    SEARCH_LABEL,
    n_trials_option,
    precision_option,
    progress_option,
    storage_option,
    study_file_argument,
    threads_option,
)
from evolver_opt.search.samplers import SAMPLER_NAMES


@click.command()
@study_file_argument
@click.option(
    "--sampler",
    default="evolver",
    show_default=True,
    help=" | ".join(SAMPLER_NAMES),
)
@n_trials_option("Finished trials to reach (default: the study's n_trials).")
@storage_option
@click.option(
    "--study-name",
    default=None,
    help=f"Default: {SEARCH_LABEL}-<sampler>-seed<seed>, e.g. demo-layer-dev100-evolver-seed0 "
    "(the form when it is a merge method's, dev<N> when the study has a dev_per_split).",
)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option(
    "--n-jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker threads in this process; they share one working model and take turns to "
    "merge and score (for evaluations in parallel, run several processes).",
)
@click.option(
    "--heartbeat",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    metavar="SECONDS",
    help="Heartbeat of a running trial; one silent for twice this long is failed and retried.",
)
@precision_option
@click.option(
    "--rerank",
    "rerank_k",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    metavar="K",
    help="After the run, re-score the K best trials on the full dev splits (0: off).",
)
@progress_option
@threads_option
def run(
    study_file: str,
    sampler: str,
    n_trials: int | None,
    storage: str | None,
    study_name: str | None,
    seed: int,
    n_jobs: int,
    heartbeat: int,
    precision: str | None,
    rerank_k: int,
    progress: bool,
) -> None:
    """Run (or resume) STUDY_FILE's merge search with one sampler.

    Several processes may run the same study on one PostgreSQL (or SQLite) storage. SIGTERM or
    Ctrl-C fails and re-queues the trials in flight; the next run resumes them. With
    ``--rerank K`` a study on a dev sample (dev_per_split) re-scores its K best trials on the
    full dev splits afterwards (see ``evolver-opt rerank``).
    """
    import optuna

    from evolver_opt.cli._shared import load_study_file, setting_up
    from evolver_opt.errors import EvolverError
    from evolver_opt.experiments.memory import PeakRSS, record_peak
    from evolver_opt.runtime.signals import Terminated
    from evolver_opt.runtime.storage import default_url, redact
    from evolver_opt.search.element import make_objective
    from evolver_opt.search.objective import build_setup
    from evolver_opt.search.runner import open_setup_study, preflight, run_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        config = load_study_file(study_file, precision)
        target = n_trials or config.n_trials
        # every name, option, device and storage error now, before minutes of zoo and setup
        (sampler,) = preflight(config, [sampler], budget=target, storage=storage, warn=click.echo)
        if rerank_k:
            from evolver_opt.experiments.rerank import check_rerankable

            check_rerankable(config, sampler, study_name or config.name)
        click.echo(setting_up(config))
        setup = build_setup(config)
        click.echo(setup.precision.summary())
        study = open_setup_study(
            setup,
            sampler,
            seed=seed,
            storage=storage,
            budget=target,
            study_name=study_name,
            heartbeat_interval=heartbeat,
        )
        with PeakRSS() as peak:
            ran = run_study(
                study,
                make_objective(setup, sampler),
                n_trials=target,
                n_jobs=n_jobs,
                show_progress_bar=progress,
                storage_url=storage or default_url(),
            )
        record_peak(study, peak)  # the compare report's peak RSS column, as for compare's runs
        if rerank_k:
            _rerank_after_run(study, setup, rerank_k)
        from evolver_opt.reports.report import annotate_run

        annotate_run(study, storage or default_url())  # optuna-dashboard note and artifacts
    except EvolverError as exc:
        raise click.ClickException(str(exc)) from None
    except Terminated as exc:
        click.echo(f"{exc}; the trials in flight were failed and re-queued", err=True)
        raise SystemExit(143) from None
    best = study.best_trial
    click.echo(
        f"{study.study_name}: ran {ran} trials; best dev {best.value:.4f} (trial {best.number}) "
        f"in {redact(storage or default_url())}"
    )


def _rerank_after_run(study, setup, k: int) -> None:
    """``--rerank K``: the K best trials re-scored on the full dev splits (same engine)."""
    if setup.config.dev_per_split is None:
        click.echo(
            f"--rerank {k} skipped: the study already scores the full dev splits "
            "(no dev_per_split), so re-scoring would not change the ranking"
        )
        return
    from evolver_opt.cli.rerank import report_rerank
    from evolver_opt.experiments.rerank import rerank_setup

    report_rerank(study, rerank_setup(study, None, reuse=setup), k)
