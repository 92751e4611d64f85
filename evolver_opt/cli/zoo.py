"""``evolver-opt zoo build STUDY.toml``: fine-tune (or reuse) one expert per domain."""

from __future__ import annotations

import time
from pathlib import Path

import click

from evolver_opt.cli._options import threads_option

_STUDY = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group()
def zoo() -> None:
    """Build and inspect the zoo of fine-tuned experts."""


@zoo.command()
@click.argument("study", type=_STUDY)
@click.option("--force/--no-force", default=False, help="Rebuild experts even when cached.")
@threads_option
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
@click.option(
    "--heads",
    type=click.Choice(["auto", "own", "task"]),
    default="auto",
    show_default=True,
    help="own: each expert as it is; task: each expert's body with the column task's head; "
    "auto: task when the study keeps heads separate or the label spaces differ.",
)
@click.option("--per-split", type=click.IntRange(min=1), default=None, help="Score a fixed, "
              "label-stratified sample of N examples of each split (default: all).")  # fmt: skip
@threads_option
def matrix(study: Path, split: str, heads: str, per_split: int | None) -> None:
    """Accuracy of every expert (rows) on every domain (columns); reporting only."""
    from evolver_opt.errors import EvolverError
    from evolver_opt.zoo import load_recipe, matrix_heads
    from evolver_opt.zoo.matrix import expert_matrix, format_matrix

    try:
        recipe = load_recipe(study)
        if heads == "auto":
            heads = matrix_heads(study, recipe)
        table = expert_matrix(recipe, split, heads=heads, per_split=per_split)
        click.echo(format_matrix(table, recipe.domains))
        if heads == "task":
            click.echo("(row: the expert whose body is scored; column: the task and its head)")
    except EvolverError as exc:
        raise click.ClickException(str(exc)) from exc
