"""A trial's Evolver lineage as Optuna stores it (the schema lives in ``core.population``)."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from evolver_opt.core.population import KEY_LINEAGE, KEY_POPULATION, Lineage, as_int, preview

__all__ = [
    "FINISHED",
    "KEY_LINEAGE",
    "KEY_POPULATION",
    "Lineage",
    "as_int",
    "offspring_info",
    "preview",
]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def offspring_info(trial: optuna.trial.BaseTrial | FrozenTrial) -> Lineage | None:
    """The lineage of ``trial`` (role, target slot, parent value) if EvolverSampler drew it.

    The objective uses ``parent_value`` for exact racing: an offspring only has to beat it.
    """
    if isinstance(trial, FrozenTrial):
        attrs = trial.system_attrs
    else:
        attrs = trial.study._storage.get_trial_system_attrs(trial._trial_id)  # type: ignore[attr-defined]
    return Lineage.from_attrs(attrs)
