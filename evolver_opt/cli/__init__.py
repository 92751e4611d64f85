"""The ``evolver-opt`` command line: one click group, each command in its own module.

Commands are imported only when invoked, so ``evolver-opt --help`` stays fast and a command
never pays for another command's imports (torch, transformers, nevergrad).
"""

from __future__ import annotations

import importlib

import click

from evolver_opt._version import __version__

# command name -> "module:attribute"; each module defines one click command or group.
_COMMANDS = {
    "demo": "evolver_opt.cli.demo:demo",
    "run": "evolver_opt.cli.run:run",
    "export": "evolver_opt.cli.export:export",
    "rerank": "evolver_opt.cli.rerank:rerank",
    "compare": "evolver_opt.cli.compare:compare",
    "baselines": "evolver_opt.cli.baselines:baselines",
    "studies": "evolver_opt.cli.studies:studies",
    "merge": "evolver_opt.cli.merge:merge",
    "data": "evolver_opt.cli.data:data",
    "zoo": "evolver_opt.cli.zoo:zoo",
    "evaluate": "evolver_opt.cli.evaluate:evaluate",
    "dashboard": "evolver_opt.cli.dashboard:dashboard",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=_LazyGroup)
@click.version_option(__version__, prog_name="evolver-opt")
def main() -> None:
    """Fuse fine-tuned models by evolving their merge weights."""
