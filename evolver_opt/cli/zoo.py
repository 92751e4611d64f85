"""``evolver-opt zoo build STUDY.toml``: fine-tune (or reuse) one expert per domain."""

from __future__ import annotations

import time
from pathlib import Path

import click

_STUDY = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group()
def zoo() -> None:
    """Build and inspect the zoo of fine-tuned experts."""


@zoo.command()
@click.argument("study", type=_STUDY)
@click.option("--force/--no-force", default=False, help="Rebuild experts even when cached.")
def build(study: Path, force: bool) -> None:
    """Build the experts described by the [zoo] table of STUDY (other tables are ignored)."""
    from evolver_opt.errors import EvolverError
    from evolver_opt.zoo import build_zoo, load_recipe

    try:
        recipe = load_recipe(study)
        start = time.perf_counter()
        cards = build_zoo(recipe, force=force, echo=click.echo)
    except EvolverError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"zoo {recipe.name!r}: {len(cards)} experts ready in {time.perf_counter() - start:.1f}s"
    )


@zoo.command()
@click.argument("study", type=_STUDY)
@click.option("--split", type=click.Choice(["dev", "test"]), default="test", show_default=True)
def matrix(study: Path, split: str) -> None:
    """Accuracy of every expert (rows) on every domain (columns); reporting only."""
    from evolver_opt.errors import EvolverError
    from evolver_opt.evaluation.report import expert_matrix, format_matrix
    from evolver_opt.zoo import load_recipe

    try:
        recipe = load_recipe(study)
        click.echo(format_matrix(expert_matrix(recipe, split), recipe.domains))
    except EvolverError as exc:
        raise click.ClickException(str(exc)) from exc
