"""``evolver-opt rerank``: re-score a study's top-k trials on a larger dev sample."""

from __future__ import annotations

from typing import Any

import click

from evolver_opt.cli._options import stored_study_options, threads_option


class _DevSample(click.ParamType):
    """``N`` (examples per dev split, N >= 1) or ``all`` (None)."""

    name = "N|all"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | None:
        if value is None or isinstance(value, int):
            return value
        if str(value).lower() == "all":
            return None
        if str(value).isdigit() and int(value) >= 1:
            return int(value)
        self.fail(f"expected a number of examples >= 1 or 'all', got {value!r}", param, ctx)


@click.command()
@stored_study_options
@click.option(
    "--top-k",
    type=int,
    default=5,
    show_default=True,
    help="How many of the best trials (by study dev) to re-score.",
)
@click.option(
    "--dev-per-split",
    type=_DevSample(),
    default="all",
    show_default=True,
    help="Examples of each dev split to re-score on; larger than the study's own.",
)
@threads_option
def rerank(storage: str | None, study_name: str, top_k: int, dev_per_split: int | None) -> None:
    """Re-score STUDY_NAME's TOP_K best trials on a larger dev sample; the answer is the best.

    Only dev splits are read. The result is stored on the study (``evolver_opt:rerank``) and
    shown in its note."""
    import optuna

    from evolver_opt.cli._shared import load_named_study
    from evolver_opt.errors import EvolverError
    from evolver_opt.experiments.rerank import check_top_k, rerank_setup
    from evolver_opt.reports.notes import refresh_note

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        check_top_k(top_k)
        study = load_named_study(storage, study_name)
        setup = rerank_setup(study, dev_per_split)
        report_rerank(study, setup, top_k)
        refresh_note(study)
    except EvolverError as exc:
        raise click.ClickException(str(exc)) from None


def report_rerank(study: Any, setup: Any, k: int) -> None:
    """Re-rank ``study``'s top ``k`` with ``setup`` and print the table and the answer."""
    from evolver_opt.experiments.rerank import describe_sample, rerank, rerank_table

    click.echo(
        f"re-ranking the top {k} trials of {study.study_name} on "
        f"{describe_sample(setup.config.dev_per_split)} ({setup.precision.used}) ..."
    )
    result = rerank(study, setup, k)
    click.echo(rerank_table(result))
    study_dev, rescored = result.scores[result.answer]
    best = next(iter(result.scores))
    click.echo(
        f"answer: trial {result.answer} (re-scored dev {rescored:.4f}, study dev "
        f"{study_dev:.4f}); the study's best was trial {best}"
    )
