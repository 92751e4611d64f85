"""Options that several commands share, so their names, defaults and help agree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

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


def _set_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    if value is not None:
        import torch

        torch.set_num_threads(value)


threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    expose_value=False,
    is_eager=True,
    callback=_set_threads,
    help="CPU threads for training, merging and evaluation (default: $OMP_NUM_THREADS, else "
    "one per core). On a busy machine fewer threads than cores is often faster.",
)

dev_per_split_option = click.option(
    "--dev-per-split",
    type=click.IntRange(min=1),
    default=None,
    help="Override: a fixed stratified sample of N examples from each dev split.",
)
test_per_split_option = click.option(
    "--test-per-split",
    type=click.IntRange(min=1),
    default=None,
    help="Override: report on N examples from each test split.",
)

study_file_argument = click.argument("study_file", type=click.Path(exists=True, dir_okay=False))

progress_option = click.option("--progress/--no-progress", default=True, show_default=True)


def n_trials_option(help: str) -> Callable[[F], F]:
    """``--n-trials N`` (at least 1; default None: the study's n_trials) with ``help``."""
    return click.option("--n-trials", type=click.IntRange(min=1), default=None, help=help)


def report_folder_option(default: str) -> Callable[[F], F]:
    """``--out FOLDER``: where the report goes, ``default`` when not given."""
    return click.option(
        "--out",
        default=None,
        type=click.Path(file_okay=False),
        help=f"Report folder (default: {default}).",
    )


def stored_study_options(command: F) -> F:
    """``--storage`` and the required ``--study-name``: one study in a storage."""
    return storage_option(click.option("--study-name", required=True)(command))
