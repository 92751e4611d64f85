"""Steps that several commands share: reading a study file, loading a stored study.

Heavy imports stay inside the functions, as in the commands themselves.
"""

from __future__ import annotations

import shlex
import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import optuna

    from evolver_opt.study.config import StudyConfig


def invoked_command() -> str:
    """The command line this process was started with, as ``evolver-opt ...`` (shell-quoted)."""
    return "evolver-opt " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def load_study_file(study_file: str, precision: str | None, **overrides: Any) -> StudyConfig:
    """``study_file``'s config with ``precision`` and the given (not None) top-level overrides."""
    from evolver_opt.study.config import load_config, override_config, with_precision

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
