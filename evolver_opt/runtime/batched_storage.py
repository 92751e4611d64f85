"""An ``RDBStorage`` that writes all parameters of a trial in one transaction.

Stock Optuna writes every ``trial.suggest_*`` as its own transaction (an ORM round trip, a
check query and a commit): about 3 ms per parameter on a SQLite file, so a 400-coefficient
trial pays over a second before its evaluation starts. :class:`BatchedRDBStorage` keeps the
parameters this process suggests for its own trials in memory and writes them in one
transaction (one bulk ``INSERT``):

* **when the trial writes anything else** (an attribute, an intermediate value, its state,
  a heartbeat), before that write, so the rows in the database are always in the order the
  stock storage writes them;
* **on** :func:`flush_params` (``evolver_opt.flush_params(trial)``), which an objective calls
  right after suggesting, so a crash during the evaluation still leaves the parameters in
  the database for ``RetryHeartbeatStaleTrialCallback`` to copy into the retry;
* **after** ``flush_after`` **seconds without a new parameter** (a timer thread), so an
  objective that never calls :func:`flush_params` is covered too, after a short delay.

Reads use plain SQL rows (``trial_reader.py``); a read of many finished trials leaves their
parameters to be read on first use (``lazy_params.py``). Reads from this process see the
buffered parameters (they are overlaid on the trials read
back), so samplers, ``trial.params`` and the cache behave as with the stock storage. The
database schema, the rows and their order are exactly Optuna's: a stock process, a stock
sampler or optuna-dashboard reads the same study. Parameter checks keep their stock timing:
an incompatible distribution raises at the ``suggest`` call, a trial another process has
already finished raises at its first ``suggest``.

The write side is :mod:`evolver_opt.runtime.batched_writes`, the read side
:mod:`evolver_opt.runtime.batched_reads`; this class joins them and owns their shared state.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState

from evolver_opt.runtime.batched_reads import _BatchedReads
from evolver_opt.runtime.batched_writes import _BatchedWrites, _Pending
from evolver_opt.runtime.trial_reader import DistributionCache

__all__ = ["BatchedRDBStorage", "flush_params"]


class BatchedRDBStorage(_BatchedWrites, _BatchedReads):
    """``RDBStorage`` with one transaction per trial's parameters (see the module docstring).

    Args:
        url, **kwargs: as for :class:`optuna.storages.RDBStorage`.
        flush_after: seconds without a new parameter after which the buffered parameters are
            written by a timer thread; ``None`` turns the timer off (then they are written on
            the trial's next write or :func:`flush_params`).
    """

    def __init__(self, url: str, *, flush_after: float | None = 0.1, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        if flush_after is not None and flush_after <= 0:
            raise ValueError(f"flush_after={flush_after!r} is invalid: expected None or > 0")
        self._flush_after = flush_after
        self._init_buffer()

    def _init_buffer(self) -> None:
        self._buffer_lock = threading.RLock()
        self._pending: _Pending = {}
        self._written: dict[int, set[str]] = {}  # names flushed per trial still running here
        self._trial_study: dict[int, int] = {}  # trial_id -> study_id (checked updatable)
        self._known: dict[tuple[int, str], BaseDistribution] = {}  # first distribution per name
        self._dists = DistributionCache()
        self._prefetched: dict[int, bool] = {}  # study_id -> whether it had stored params
        # trial_id -> (params, distributions): every parameter of a trial this process runs
        # (created or claimed here), stored or buffered, in suggestion order; its reads skip
        # the parameter rows. Finished trials stay until a study read has returned them.
        self._own: dict[int, tuple[dict[str, Any], dict[str, BaseDistribution]]] = {}
        self._own_finished: dict[int, None] = {}  # finished trials of _own, oldest first
        # trial_id -> the whole trial, while it runs here: every write to it goes through this
        # process, so a read only checks (one query) that no other process finished it
        self._running: dict[int, FrozenTrial] = {}
        self._interned: dict[BaseDistribution, BaseDistribution] = {}
        self._last_buffered = 0.0
        self._timer: threading.Timer | None = None

    def __getstate__(self) -> dict[Any, Any]:
        self.flush()
        state = super().__getstate__()
        for key in _process_state():  # made anew by __setstate__
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._init_buffer()

    # ------------------------------------------------------------------ stale trials
    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's stale trials, plus RUNNING trials of other processes that never wrote a
        heartbeat and started more than the grace period ago.

        Their worker died between creating the trial and its first heartbeat (e.g. the disk
        filled up); Optuna skips trials without a heartbeat row, so they would stay RUNNING
        (and count against the budget) forever. Optuna stores start times as naive UTC.
        """
        stale = super()._get_stale_trial_ids(study_id)
        assert self.heartbeat_interval is not None
        grace = self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval
        cutoff = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=grace)
        with self._buffer_lock:
            mine = set(self._running)
        t, h = models.TrialModel, models.TrialHeartbeatModel
        with _create_scoped_session(self.scoped_session) as session:
            rows = (
                session.query(t.trial_id, t._datetime_start_utc)
                .outerjoin(h, h.trial_id == t.trial_id)
                .filter(t.study_id == study_id, t.state == TrialState.RUNNING)
                .filter(h.trial_id.is_(None))
                .all()
            )
        orphans = [
            trial_id
            for trial_id, start in rows
            if trial_id not in mine and trial_id not in stale and start and start < cutoff
        ]
        return stale + orphans


def _process_state() -> list[str]:
    """The attributes ``_init_buffer`` makes: this process's buffer, locks and caches."""
    blank = object.__new__(BatchedRDBStorage)
    blank._init_buffer()
    return list(vars(blank))


def flush_params(trial: Any) -> None:
    """Write the parameters ``trial`` has suggested so far, if its storage buffers them.

    Call it in an objective right after the ``suggest_*`` calls: a crash during the
    evaluation then leaves the parameters in the database, so the heartbeat's retry
    re-runs the same point. A no-op for any other storage or trial (``FixedTrial``, ...).
    """
    study = getattr(trial, "study", None)
    storage = getattr(study, "_storage", None)
    backend = getattr(storage, "_backend", storage)
    if isinstance(backend, BatchedRDBStorage):
        backend.flush(trial._trial_id)
