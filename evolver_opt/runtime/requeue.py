"""Give a trial back to the queue, as the heartbeat's retry does for a stale trial: a WAITING
copy with the same parameters. Used for the trials in flight when the worker stops (SIGTERM,
Ctrl-C, an error) and for a trial the database failed under."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from evolver_opt.errors import StorageError
from evolver_opt.runtime.storage_guard import StorageGuard

_logger = logging.getLogger(__name__)

ABANDON_RETRY_S = 3.0  # per trial in flight when the worker stops


def requeue(study: optuna.Study, failed: FrozenTrial) -> None:
    """Re-queue ``failed`` with the same parameters, as the heartbeat's retry would."""
    retry = getattr(study._storage, "get_heartbeat_stale_trial_callback", lambda: None)()
    if retry is not None:
        retry(study, failed)


def fail_and_requeue(study: optuna.Study, trial_id: int, reason: str) -> None:
    """Fail the running trial ``trial_id`` with ``reason`` and, if this call failed it, re-queue
    it."""
    storage = study._storage
    storage.set_trial_system_attr(trial_id, "fail_reason", reason)
    if storage.set_trial_state_values(trial_id, TrialState.FAIL):
        requeue(study, storage.get_trial(trial_id))


def abandon(
    study: optuna.Study, guard: StorageGuard, trials: Iterable[optuna.Trial], exc: BaseException
) -> None:
    """Fail ``trials`` (in flight when ``exc`` stopped the worker) and re-queue them, so none
    stays RUNNING; a trial that cannot be failed is logged, not raised."""
    reason = f"worker stopped: {type(exc).__name__}: {exc}".strip().rstrip(":")
    for trial in trials:
        try:  # a lock held a moment (SQLite) is waited out, briefly: the worker is stopping
            guard.call(
                f"fail trial {trial.number}",
                lambda t=trial: fail_and_requeue(study, t._trial_id, reason),
                retry_s=ABANDON_RETRY_S,
            )
        except UpdateFinishedTrialError:
            pass  # told before the stop: its value is kept
        except StorageError as err:
            _logger.warning("could not fail trial %d: %s", trial.number, err)
