"""Options that several commands share, so their names, defaults and help agree."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

STORAGE_HELP = (
    "Optuna storage URL (default: $EVOLVER_OPT_STORAGE, else sqlite:///runs/evolver.db; the same "
    "for every command)."
)

storage_option = click.option("--storage", default=None, help=STORAGE_HELP)

# The stem of a study's default name, its compare folder and its baselines file
# (StudyConfig.search_label): the form only when a merge method's, dev<N> only with dev_per_split.
SEARCH_LABEL = "<name>-<granularity>[-<form>][-dev<N>]"

precision_option = click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16"]),
    default=None,
    help="Evaluation precision (default: the study file's [study.evaluation] precision, auto: "
    "bfloat16 where the CPU or GPU has it, checked against float32 on the start points).",
)


class _Threads(click.ParamType):
    """``auto`` or a number of threads N >= 1."""

    name = "auto|N"

    def convert(self, value: Any, param: Any, ctx: Any) -> str | int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        if text.isdigit() and int(text) >= 1:
            return int(text)
        self.fail(f"expected 'auto' or a number of threads >= 1, got {value!r}", param, ctx)


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (``os.cpu_count`` where the platform
    has no affinity call)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def auto_threads(workers: int = 1, *, cores: int | None = None) -> int:
    """``--threads auto``: ``$OMP_NUM_THREADS`` when it is a number >= 1, else the cores this
    process may use divided by the torch workers it runs at once (at least one)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env)
    return max(1, (cores or usable_cores()) // workers)


def load_average() -> float:
    """The one-minute load average (0.0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def load_warning(threads: int, *, cores: int, load: float) -> str | None:
    """One line naming the cost when the load average already exceeds ``cores``, else None.

    Each of the ``threads`` threads then gets about ``cores / (load + threads)`` of a core
    instead of a whole one (of ``cores / threads`` when threads outnumber the cores)."""
    if load <= cores:
        return None
    idle = min(threads, cores)
    busy = threads * cores / (load + threads)
    return (
        f"warning: load average {load:.1f} on {cores} core{'s' if cores > 1 else ''}: other "
        f"processes already use them, so training and scoring with {threads} "
        f"thread{'s' if threads > 1 else ''} will run about {idle / busy:.1f}x slower than on "
        "idle cores"
    )


def apply_threads(value: str | int, workers: int = 1) -> int:
    """Set torch's CPU threads for ``value`` (``auto`` or N) and return the count.

    Before torch is first imported, OpenMP threads are told to sleep rather than spin while
    they wait (``OMP_WAIT_POLICY=PASSIVE`` unless the user set it): a spinning thread holds a
    core that another process on the same cores needs (two studies side by side on 2 cores ran
    at about 0.11x of their solo rate). Warns on stderr when the load already exceeds the
    cores."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch loads libgomp
    threads = auto_threads(workers) if value == "auto" else int(value)
    import torch

    torch.set_num_threads(threads)
    warning = load_warning(threads, cores=usable_cores(), load=load_average())
    if warning:
        click.echo(warning, err=True)
    return threads


def _set_threads(ctx: click.Context, param: click.Parameter, value: str | int) -> None:
    if not ctx.resilient_parsing:  # shell completion runs callbacks too
        apply_threads(value)


# Every command that trains, merges or scores with torch takes it. Its workers are one torch
# worker at a time: ``run --n-jobs K`` threads take turns on the one working model (the
# setup's lock), so each trial's merge and scoring gets every thread.
threads_option = click.option(
    "--threads",
    type=_Threads(),
    default="auto",
    show_default=True,
    metavar="auto|N",
    expose_value=False,
    is_eager=True,
    callback=_set_threads,
    help="CPU threads for training, merging and evaluation. auto: $OMP_NUM_THREADS when set, "
    "else the cores this process may use divided by the torch workers it runs at once; warns "
    "when the load average already exceeds the cores. Idle OpenMP threads sleep instead of "
    "spinning (OMP_WAIT_POLICY=PASSIVE unless set), so processes that share cores keep their "
    "pace.",
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
