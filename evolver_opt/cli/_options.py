"""Options that several commands share, so their names, defaults and help agree."""

from __future__ import annotations

import click

STORAGE_HELP = (
    "Optuna storage URL (default: $EVOLVER_OPT_STORAGE, else sqlite:///runs/evolver.db; the same "
    "for every command)."
)

storage_option = click.option("--storage", default=None, help=STORAGE_HELP)

precision_option = click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16"]),
    default=None,
    help="Evaluation precision (default: the study file's [study.evaluation] precision, auto: "
    "bfloat16 where the CPU or GPU has it, checked against float32 on the start points).",
)
