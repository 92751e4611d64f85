"""``evolver-opt baselines``: the static merges tuned on dev, Fisher and RegMean, as rows."""

from __future__ import annotations

import json
from pathlib import Path

import click

from evolver_opt.cli._options import (
    SEARCH_LABEL,
    dev_per_split_option,
    study_file_argument,
    test_per_split_option,
    threads_option,
)


@click.command()
@study_file_argument
@dev_per_split_option
@test_per_split_option
@click.option(
    "--examples",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Training examples per expert for the Fisher and RegMean statistics (cached).",
)
@click.option(
    "--out",
    default=None,
    type=click.Path(dir_okay=False),
    help=f"JSON file of the rows (default: runs/baselines-{SEARCH_LABEL}.json); an existing file is "
    "refused unless --overwrite.",
)
@click.option(
    "--methods",
    default=None,
    help="Comma-separated subset of the methods to tune (default: every registered method with "
    "a dev grid or a data requirement).",
)
@click.option("--overwrite/--no-overwrite", default=False, show_default=True)
@threads_option
def baselines(
    study_file: str,
    dev_per_split: int | None,
    test_per_split: int | None,
    examples: int,
    out: str | None,
    methods: str | None,
    overwrite: bool,
) -> None:
    """Tune the static merges of STUDY_FILE on dev and score them on test, with Fisher and
    RegMean; writes the rows in compare's results.json format. All in float32."""
    from evolver_opt.cli._shared import invoked_command, load_study_file, setting_up
    from evolver_opt.errors import EvolverError
    from evolver_opt.experiments.baselines import baseline_rows, describe, split_methods
    from evolver_opt.experiments.rows import rows_as_json
    from evolver_opt.paths import runs_dir, write_text_atomic
    from evolver_opt.search.objective import build_setup

    if out is not None:
        _check_out(Path(out), overwrite)  # before minutes of merging
    try:
        grids, data_methods = split_methods(methods)  # unknown names: before any work
        config = load_study_file(  # fp32: no bfloat16 check to run
            study_file, "fp32", dev_per_split=dev_per_split, test_per_split=test_per_split
        )
        click.echo(setting_up(config))
        setup = build_setup(config)
        rows = baseline_rows(
            setup, grids=grids, data_methods=data_methods, n_examples=examples, echo=click.echo
        )
    except EvolverError as exc:
        raise click.ClickException(str(exc)) from None
    path = Path(out) if out else runs_dir() / f"baselines-{config.search_label}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "title": f"{config.name} ({config.granularity}): tuned static baselines",
        "command": invoked_command(),
        "rows": rows_as_json(rows),
    }
    write_text_atomic(path, json.dumps(payload, indent=1))
    for row in rows:
        test = "-" if row.test_in is None else f"{row.test_in:.4f}"
        click.echo(f"{describe(row)}; test in-domain {test}")
    click.echo(f"wrote {path}")


def _check_out(path: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that exists, unless ``--overwrite``."""
    if path.exists() and not overwrite:
        raise click.UsageError(
            f"--out {path} exists; pass --overwrite to replace it (or choose another file)"
        )
