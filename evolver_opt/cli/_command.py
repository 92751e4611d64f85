"""The command line that ran a click command, rebuilt from what the user gave (for model cards)."""

from __future__ import annotations

import shlex
from typing import Any

import click
from click.core import ParameterSource

_GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT, ParameterSource.PROMPT)


def command_line(ctx: click.Context, *, prog: str = "evolver-opt") -> str:
    """``prog <command> --option value ...`` with the options given on the command line (or by
    environment variable), in the command's declared order; flags as their switch."""
    words = [prog, *ctx.command_path.split()[1:]]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name is None or not param.expose_value:
            continue
        if ctx.get_parameter_source(param.name) not in _GIVEN:
            continue
        words += _option_words(param, ctx.params.get(param.name))
    for param in ctx.command.params:
        if isinstance(param, click.Argument) and param.name is not None:
            value = ctx.params.get(param.name)
            words += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    return " ".join(shlex.quote(w) for w in words)


def _option_words(param: click.Option, value: Any) -> list[str]:
    if param.is_flag:
        if param.secondary_opts:
            return [param.opts[0] if value else param.secondary_opts[0]]
        return [param.opts[0]] if value else []
    values = value if param.multiple else [value]
    words: list[str] = []
    for v in values:
        if v is None:
            continue
        if isinstance(v, (list, tuple)):  # a callback made a list (e.g. --weights 0.3,0.7)
            v = ",".join(repr(x) if isinstance(x, float) else str(x) for x in v)
        words += [param.opts[0], str(v)]
    return words
