"""What an objective reads from a trial that an Evolver sampler drew: its lineage and the value
it must beat, from the trial's system attributes (JSON), never from the sampler object, so an
objective needs no import of a sampler module."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

from evolver_opt.core import population as core
from evolver_opt.core.population import Lineage

__all__ = ["offspring_info", "parent_value", "system_attrs"]


def system_attrs(trial: optuna.trial.BaseTrial | FrozenTrial) -> dict[str, Any]:
    """The system attributes of a finished (``FrozenTrial``) or running trial."""
    if isinstance(trial, FrozenTrial):
        return trial.system_attrs
    return trial.study._storage.get_trial_system_attrs(trial._trial_id)  # type: ignore[attr-defined]


def offspring_info(trial: optuna.trial.BaseTrial | FrozenTrial) -> Lineage | None:
    """The lineage of ``trial`` (role, target slot, parent value) if EvolverSampler drew it."""
    return Lineage.from_attrs(system_attrs(trial))


def parent_value(trial: optuna.trial.BaseTrial | FrozenTrial) -> float | None:
    """The value an Evolver offspring must beat (its parent's when it was drawn; the
    objective's direction), or None when ``trial`` is not an offspring with a scored parent.
    What an objective needs for exact racing (``core.population.parent_value``)."""
    return core.parent_value(system_attrs(trial))
