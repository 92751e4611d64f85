"""The heartbeat of a trial while its objective runs, and the trial wrapper that keeps the
user attributes the objective sets after another process took the trial over."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

from evolver_opt.runtime.storage_guard import database_reason

_logger = logging.getLogger(__name__)


class GuardedTrial(optuna.Trial):
    """A trial whose ``set_user_attr`` survives a takeover: after another process finished the
    trial, attributes are kept in memory and copied to the trial that receives the value."""

    _orphan_attrs: dict[str, Any]

    def set_user_attr(self, key: str, value: Any) -> None:
        try:
            super().set_user_attr(key, value)
        except UpdateFinishedTrialError:
            self._orphan_attrs[key] = value


def guard_trial(trial: optuna.Trial) -> GuardedTrial:
    """``trial`` itself, turned into a :class:`GuardedTrial` with no orphan attributes yet."""
    trial.__class__ = GuardedTrial  # same object, same state: only set_user_attr differs
    trial._orphan_attrs = {}  # type: ignore[attr-defined]
    return trial  # type: ignore[return-value]


@contextmanager
def heartbeat(storage: BaseStorage, trial_id: int, number: int) -> Iterator[None]:
    """Record the trial's heartbeat every interval while the body runs (RDB storages).

    Unlike Optuna's heartbeat thread, which dies with a traceback at the first database error
    (so the trial looks stale and another worker retries it while it still runs), this one logs
    one line and keeps trying at each beat: a short database outage costs nothing.
    """
    if not is_heartbeat_enabled(storage):
        yield
        return
    beating = cast(BaseHeartbeat, storage)  # what is_heartbeat_enabled checked
    interval = beating.get_heartbeat_interval()
    stop = threading.Event()

    def beat() -> None:
        failing = False
        while True:
            try:
                beating.record_heartbeat(trial_id)
                if failing:
                    _logger.warning("trial %d: heartbeat written again", number)
                failing = False
            except Exception as exc:  # noqa: BLE001 - never die: the next beat tries again
                if not failing:
                    _logger.warning(
                        "trial %d: heartbeat not written (%s); retrying",
                        number,
                        database_reason(exc),
                    )
                failing = True
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, daemon=True, name=f"evolver-heartbeat-{number}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
