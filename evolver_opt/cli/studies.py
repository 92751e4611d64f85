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
    rows = [_row(opened, s) for s in sorted(summaries, key=lambda s: s.study_name)]
    click.echo(_table([("study", "sampler", "finished", "best"), *rows]))


def _row(storage, summary) -> tuple[str, str, str, str]:
    """(name, sampler, finished trials, best value) of one study summary."""
    from evolver_opt.search.attributes import ATTR_SAMPLER

    sampler = summary.user_attrs.get(ATTR_SAMPLER, {}).get("name", "-")
    best = f"{summary.best_trial.value:.4f}" if summary.best_trial is not None else "-"
    return summary.study_name, sampler, str(_finished(storage, summary._study_id)), best


def _table(rows: list[tuple[str, str, str, str]]) -> str:
    """Columns as wide as their longest cell (names left-aligned, numbers right-aligned)."""
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d:>{widths[3]}}"
        for a, b, c, d in rows
    )


def _finished(storage, study_id: int) -> int:
    """Finished trials (COMPLETE, PRUNED, FAIL): enqueued start points are not trials yet."""
    return sum(t.state.is_finished() for t in storage.get_all_trials(study_id, deepcopy=False))
