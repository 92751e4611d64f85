"""Tell a trial's result, and keep a value whose trial another process finished meanwhile.

A trial taken over (its heartbeat went stale while the worker paused) is already FAIL when its
value arrives. The value is *rescued*: if the heartbeat re-queued the trial (a WAITING retry
with the same parameters), the retry is claimed and completed with it; otherwise a COMPLETE
copy of the trial is added, marked with :data:`KEY_RESCUED`.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from evolver_opt.runtime.heartbeat import GuardedTrial
from evolver_opt.runtime.storage_guard import StorageGuard

_logger = logging.getLogger(__name__)

KEY_RESCUED = "evolver_opt:rescued_from"


def tell_or_rescue(
    study: optuna.Study,
    guard: StorageGuard,
    trial: GuardedTrial,
    value: float | None,
    state: TrialState | None,
    reason: str,
) -> FrozenTrial | None:
    """Tell the result; rescue it if another process finished the trial meanwhile. Returns the
    trial that holds the result, or None when there is nothing to keep."""
    storage = study._storage
    current = guard.call("read the trial", lambda: storage.get_trial(trial._trial_id))
    if current.state == TrialState.RUNNING:
        try:
            if reason:
                guard.call(
                    "record why the trial failed",
                    lambda: storage.set_trial_system_attr(trial._trial_id, "fail_reason", reason),
                )
            guard.call(
                "tell the result",
                lambda: study.tell(trial, value, state=state, skip_if_finished=True),
            )
            return guard.call("read the trial", lambda: storage.get_trial(trial._trial_id))
        except UpdateFinishedTrialError:
            current = storage.get_trial(trial._trial_id)
    if current.state == TrialState.RUNNING or value is None or state is not None:
        return None  # nothing computed to keep (the retry, if any, evaluates again)
    return guard.call(
        "rescue the result", lambda: rescue(study, current, value, trial._orphan_attrs)
    )


def rescue(
    study: optuna.Study, lost: FrozenTrial, value: float, orphan_attrs: dict[str, Any]
) -> FrozenTrial:
    """Keep ``value`` of ``lost`` (finished by another process) durably in the storage, with the
    user attributes ``orphan_attrs`` set after the takeover."""
    storage = study._storage
    attrs = {**lost.user_attrs, **orphan_attrs, KEY_RESCUED: lost.number}
    for t in storage.get_all_trials(study._study_id, deepcopy=False):
        if (
            t.state == TrialState.WAITING
            and lost.number in t.system_attrs.get("retry_history", ())
            and t.params == lost.params
            and storage.set_trial_state_values(t._trial_id, TrialState.RUNNING)
        ):
            for key, v in attrs.items():
                storage.set_trial_user_attr(t._trial_id, key, v)
            study.tell(t.number, value)
            _logger.warning(
                "trial %d was failed by another process while it ran; its value %r completes "
                "its retry, trial %d",
                lost.number,
                value,
                t.number,
            )
            return storage.get_trial(t._trial_id)
    system_attrs = {k: v for k, v in lost.system_attrs.items() if k != "fixed_params"}
    system_attrs.setdefault("failed_trial", lost.number)
    template = optuna.create_trial(
        params=lost.params,
        distributions=lost.distributions,
        value=value,
        user_attrs=attrs,
        system_attrs=system_attrs,
    )
    copy = storage.get_trial(storage.create_new_trial(study._study_id, template_trial=template))
    _logger.warning(
        "trial %d was failed by another process while it ran; its value %r is kept as trial %d",
        lost.number,
        value,
        copy.number,
    )
    return copy
