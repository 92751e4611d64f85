"""``evolver-opt evaluate MODEL_DIR STUDY.toml --split dev|test``: a per-domain table."""

from __future__ import annotations

from pathlib import Path

import click

from evolver_opt.cli._options import threads_option


@click.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("study", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--split", type=click.Choice(["dev", "test"]), default="dev", show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ...")
@click.option("--bf16/--no-bf16", default=False, help="bfloat16 autocast (for CUDA).")
@threads_option
def evaluate(
    model_dir: Path, study: Path, split: str, batch_size: int, device: str, bf16: bool
) -> None:
    """Accuracy and macro-F1 of MODEL_DIR on each domain of STUDY, and their mean."""
    from evolver_opt.errors import EvolverError
    from evolver_opt.evaluation.report import evaluate_domains, format_table
    from evolver_opt.zoo import load_expert, load_recipe

    try:
        recipe = load_recipe(study)
        model, tokenizer = load_expert(model_dir, device=device)
        results = evaluate_domains(
            model,
            tokenizer,
            recipe.domains,
            split,
            batch_size=batch_size,
            device=device,
            max_length=recipe.max_length,
            bf16=bf16,
        )
    except EvolverError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_table(results))
