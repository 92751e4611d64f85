"""``evolver-opt studies``: the studies in a storage, with sampler, trials and best dev score."""

from __future__ import annotations

import click

from evolver_opt.cli._options import storage_option


@click.command()
@storage_option
def studies(storage: str | None) -> None:
    """List the studies in STORAGE."""
    import optuna

    from evolver_opt.errors import EvolverError
    from evolver_opt.runtime.storage import default_url, open_storage, redact, sqlite_path
    from evolver_opt.study.runner import ATTR_SAMPLER

    url = storage or default_url()
    database = sqlite_path(url)
    if database is not None and not database.is_file():  # do not create an empty one
        click.echo(f"no studies: no study database at {database} (--storage chooses another)")
        return
    try:
        opened = open_storage(url, heartbeat_interval=None)
        summaries = optuna.get_all_study_summaries(storage=opened, include_best_trial=True)
    except EvolverError as exc:
        raise click.ClickException(str(exc)) from None
    if not summaries:
        click.echo(f"no studies in {redact(url)}")
        return
    click.echo(f"studies in {redact(url)}")
    click.echo(f"{'study':<48} {'sampler':<16} {'finished':>8} {'best':>9}")
    for s in sorted(summaries, key=lambda s: s.study_name):
        sampler = s.user_attrs.get(ATTR_SAMPLER, {}).get("name", "-")
        best = f"{s.best_trial.value:.4f}" if s.best_trial is not None else "-"
        finished = _finished(opened, s._study_id)
        click.echo(f"{s.study_name:<48} {sampler:<16} {finished:>8} {best:>9}")


def _finished(storage, study_id: int) -> int:
    """Finished trials (COMPLETE, PRUNED, FAIL): enqueued start points are not trials yet."""
    return sum(t.state.is_finished() for t in storage.get_all_trials(study_id, deepcopy=False))
