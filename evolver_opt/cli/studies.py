"""``evolver-opt studies``: the studies in a storage, with sampler, trials and best dev score."""

from __future__ import annotations

import click


@click.command()
@click.option(
    "--storage", default=None, help="Optuna storage URL (default: sqlite:///runs/evolver.db)."
)
def studies(storage: str | None) -> None:
    """List the studies in STORAGE."""
    import optuna

    from evolver_opt.errors import EvolverError
    from evolver_opt.integrations.storage import open_storage
    from evolver_opt.study.runner import ATTR_SAMPLER

    try:
        summaries = optuna.get_all_study_summaries(
            storage=open_storage(storage), include_best_trial=True
        )
    except EvolverError as exc:
        raise click.ClickException(str(exc)) from None
    if not summaries:
        click.echo("no studies")
        return
    click.echo(f"{'study':<48} {'sampler':<16} {'trials':>6} {'best dev':>9}")
    for s in sorted(summaries, key=lambda s: s.study_name):
        sampler = s.user_attrs.get(ATTR_SAMPLER, {}).get("name", "-")
        best = f"{s.best_trial.value:.4f}" if s.best_trial is not None else "-"
        click.echo(f"{s.study_name:<48} {sampler:<16} {s.n_trials:>6} {best:>9}")
