"""What ``evolver-opt merge`` reads from the method registry: the methods it offers, their
parameters, and the data a data-dependent method needs (each expert's own training examples,
or their statistics cached beside the expert, as ``baselines`` computes them)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click

DATA_ARGUMENTS = ("examples",)  # parameters that are data, never given as --param


def offered_methods() -> list[str]:
    """Every registered method the CLI offers (all of them, unless a method says ``cli =
    False``)."""
    from evolver_opt.merge.methods import get_method, list_methods

    return [m for m in list_methods() if getattr(get_method(m), "cli", True)]


def data_kind(method: Any) -> str | None:
    """What data ``method`` needs: None (data-free), ``"statistics"`` or ``"examples"``
    (read from its capabilities; a method that declares none but takes ``examples``: examples)."""
    if hasattr(type(method), "data"):
        return method.data
    return "examples" if "examples" in method.params else None


def data_parameters(method: Any) -> set[str]:
    """The method's parameters that carry data (filled from ``--examples``, not ``--param``)."""
    names = {*DATA_ARGUMENTS, getattr(method, "statistics_argument", None)}
    return {p for p in method.params if p in names}


class MethodOption(click.Option):
    """``--method``, whose help lists the registered methods when help is shown (importing
    the registry, and torch, only then)."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        from evolver_opt.merge.methods import get_method

        names = []
        for name in offered_methods():
            kind = data_kind(get_method(name))
            names.append(f"{name} (needs --examples)" if kind else name)
        self.help = "One of: " + ", ".join(names) + "."
        return super().get_help_record(ctx)


def parse_params(values: Sequence[str]) -> dict[str, Any]:
    """``--param KEY=VALUE`` pairs; VALUE as JSON (numbers, true/false, lists), else text."""
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--param")
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out


def expert_names(models: Sequence[str], method: str) -> list[str]:
    """Each model's training domain (a zoo expert's ``card.json``, else the folder's name when
    it is a prepared domain); a model with neither is refused, naming it."""
    from evolver_opt.data import list_domains
    from evolver_opt.export.card import expert_domains

    domains = set(list_domains())
    carded = expert_domains({str(m): str(m) for m in models})
    names = []
    for model in models:
        name = carded.get(str(model), Path(model).resolve().name)
        if name not in domains:
            raise click.UsageError(
                f"--method {method} uses each expert's own training data, and model {model} has "
                f"none evolver-opt knows: no card.json naming its domain (an evolver-opt zoo "
                f"expert has one) and {name!r} is not a prepared domain "
                f"({', '.join(sorted(domains))})"
            )
        names.append(name)
    if len(set(names)) != len(names):
        raise click.UsageError(f"--method {method}: two models share a training domain: {names}")
    return names


def data_arguments(
    engine: Any,
    method: Any,
    n_examples: int,
    max_length: int,
    batch_size: int,
    echo: Callable[[str], Any] = click.echo,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The merge's data arguments (examples, or cached statistics) and what the recipe says of
    them. Statistics are computed once per expert and reused (``study.merge_stats``)."""
    from evolver_opt.evaluation.tokenizer import shared_tokenizer
    from evolver_opt.search.merge_stats import (
        KINDS,
        StatsSpec,
        StoredStats,
        ensure_stats,
        training_batches,
        training_sample,
    )

    experts = [(m.name, m.path) for m in engine.checkpoints.models]
    tokenizer = shared_tokenizer([*experts, ("base", engine.checkpoints.base.path)])
    setup = SimpleNamespace(engine=engine, tokenizer=tokenizer)
    spec = StatsSpec(n_examples, max_length, batch_size)
    info: dict[str, Any] = {"examples_per_expert": n_examples, "max_length": max_length}
    kind = data_kind(method)
    argument = getattr(method, "statistics_argument", None)
    if kind == "statistics":
        stats_kind = getattr(method, "statistics_kind", None) or method.name
        if argument is None or stats_kind not in KINDS:
            raise click.UsageError(
                f"--method {method.name} needs statistics that evolver-opt does not cache "
                f"(it caches {list(KINDS)}); use the Python API with examples"
            )
        paths = ensure_stats(setup, stats_kind, spec, echo)
        info["statistics"] = [str(p) for p in paths]
        return {argument: StoredStats(engine, stats_kind, paths)}, info
    batches = {
        name: training_batches(setup, training_sample(name, n_examples), batch_size, max_length)
        for name in engine.model_names
    }
    info["batch_size"] = batch_size
    return {"examples": batches}, info
