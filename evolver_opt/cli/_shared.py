"""Steps that several commands share: reading a study file, loading a stored study.

Heavy imports stay inside the functions, as in the commands themselves.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import optuna

    from evolver_opt.search.config import StudyConfig


def invoked_command() -> str:
    """The command line this process was started with, as ``evolver-opt ...`` (shell-quoted)."""
    return "evolver-opt " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def program() -> str:
    """``evolver-opt`` as a fresh shell in the current folder can run it.

    Inside a virtual environment (the README's install), a fresh shell has not activated it:
    the script's path, relative when under the current folder (``.venv/bin/evolver-opt``).
    Elsewhere, ``evolver-opt`` when ``$PATH`` finds this script, else its path."""
    script = Path(sys.argv[0]) if Path(sys.argv[0]).name == "evolver-opt" else None
    if script is None or not script.is_file():
        script = Path(sys.executable).parent / "evolver-opt"
        if not script.is_file():
            return "evolver-opt"
    script = script.absolute()
    on_path = shutil.which("evolver-opt")
    in_venv = sys.prefix != sys.base_prefix
    if not in_venv and on_path and Path(on_path).absolute() == script:
        return "evolver-opt"
    here = Path.cwd()
    shown = os.path.relpath(script, here) if script.is_relative_to(here) else str(script)
    return shlex.quote(shown if os.sep in shown else f".{os.sep}{shown}")  # a path, not a name


def setting_up(config: StudyConfig) -> str:
    """The line printed before a study's setup, which takes minutes on a first run (the data,
    the zoo's experts, the tokenized dev splits) and seconds after."""
    built = " (zoo experts not built yet are trained first)" if config.zoo is not None else ""
    return (
        f"setting up {config.name}: {len(config.expert_specs())} experts, {config.granularity} "
        f"granularity; loading them and tokenizing the dev splits{built} ..."
    )


def load_study_file(study_file: str, precision: str | None, **overrides: Any) -> StudyConfig:
    """``study_file``'s config with ``precision`` and the given (not None) top-level overrides."""
    from evolver_opt.search.config import load_config, override_config, with_precision

    config = with_precision(load_config(study_file), precision)
    given = {k: v for k, v in overrides.items() if v is not None}
    return override_config(config, given, source=study_file)


def load_named_study(storage: str | None, study_name: str) -> optuna.Study:
    """The study ``study_name`` in ``storage`` (default URL when None), or a ClickException."""
    import optuna

    from evolver_opt.runtime.storage import default_url, no_such_study, open_storage

    url = storage or default_url()
    opened = open_storage(url)
    try:
        return optuna.load_study(study_name=study_name, storage=opened)
    except KeyError:
        raise click.ClickException(no_such_study(study_name, url, opened)) from None
