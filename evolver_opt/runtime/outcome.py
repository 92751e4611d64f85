"""Run the objective on one trial and turn what it returned or raised into the result to tell.

A NaN (or a value that is not a number) fails the trial with a reason, a prune prunes it, a
database error under the objective fails it for a re-queue, an exception in ``catch`` fails it
with its message; a tampered sampler state or a lost database stops the worker.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import TrialPruned, UpdateFinishedTrialError
from optuna.trial import TrialState

from evolver_opt.errors import StateError, StorageError
from evolver_opt.runtime.storage_guard import DATABASE_ERRORS, StorageGuard, database_reason

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What to tell: ``value`` (None unless computed), ``state`` (None: COMPLETE), why it failed,
    and whether to re-queue the failed trial (the storage failed, not the objective)."""

    value: float | None = None
    state: TrialState | None = None
    reason: str = ""
    requeue: bool = False


def run_objective(
    objective: Callable[[optuna.Trial], float],
    trial: optuna.Trial,
    catch: tuple[type[Exception], ...],
    guard: StorageGuard,
) -> Outcome:
    """``objective(trial)`` as an :class:`Outcome`; ``guard`` names the storage in errors."""
    try:
        value = objective(trial)
        if not _is_number(value):  # NaN: Optuna would fail it without a reason
            reason = f"the objective returned {value!r}"
            _logger.warning("trial %d failed: %s", trial.number, reason)
            return Outcome(state=TrialState.FAIL, reason=reason)
        return Outcome(value=value)
    except TrialPruned:
        return Outcome(state=TrialState.PRUNED)
    except UpdateFinishedTrialError:
        return Outcome(state=TrialState.FAIL, reason="taken over before it set its parameters")
    except (StateError, StorageError):
        raise  # tampered sampler state, lost database: stop with the clear message
    except json.JSONDecodeError as exc:  # the sampler read a tampered attribute
        raise guard.bad_json(exc) from None
    except DATABASE_ERRORS as exc:
        # The database failed under the objective (e.g. while it stored a parameter):
        # the trial is failed and re-queued once the storage answers again.
        reason = f"storage error during the trial: {database_reason(exc)}"
        _logger.warning("trial %d: %s", trial.number, reason)
        return Outcome(state=TrialState.FAIL, reason=reason, requeue=True)
    except catch as exc:
        reason = f"{type(exc).__name__}: {exc}"
        _logger.warning("trial %d failed: %s", trial.number, reason)
        return Outcome(state=TrialState.FAIL, reason=reason)


def _is_number(value: Any) -> bool:
    """A value Optuna completes a trial with: a float that is not NaN (inf is kept)."""
    try:
        return not math.isnan(float(value))
    except (TypeError, ValueError):
        return False
