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
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Container
from datetime import UTC, datetime, timedelta
from typing import Any

import optuna
import sqlalchemy
from optuna import distributions
from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState

from evolver_opt.runtime.trial_reader import (
    DistributionCache,
    read_params_by_id,
    read_trials,
)

__all__ = ["BatchedRDBStorage", "flush_params"]

_logger = optuna.logging.get_logger(__name__)

# trial_id -> {param name: (internal value, distribution)}, in suggestion order
_Pending = dict[int, dict[str, tuple[float, BaseDistribution]]]
_MAX_OWN_FINISHED = 64  # finished trials of this process whose parameters are kept for reads


class BatchedRDBStorage(RDBStorage):
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

    # ------------------------------------------------------------------ buffering
    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        self._set_trial_param(trial_id, param_name, param_value_internal, distribution, None)

    def _set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
        previous_distribution: BaseDistribution | None,
    ) -> None:
        with self._buffer_lock:
            study_id = self._study_of_updatable(trial_id)
            previous = previous_distribution or self._known.get((study_id, param_name))
            if previous is None and study_id not in self._prefetched:
                self._prefetch_distributions(study_id)
                previous = self._known.get((study_id, param_name))
            if previous is None and self._prefetched[study_id]:
                previous = self._stored_distribution(study_id, param_name)
            if previous is not None:
                distributions.check_distribution_compatibility(previous, distribution)
            self._known.setdefault((study_id, param_name), previous or distribution)
            pending = self._pending.setdefault(trial_id, {})
            if param_name in pending or param_name in self._written.get(trial_id, ()):
                return  # the stock storage ignores a second write of a name (unique key)
            # one object per distinct distribution: copies of the trial (Optuna deep-copies
            # it in ``tell``) copy each distinct distribution once, not once per parameter
            distribution = self._interned.setdefault(distribution, distribution)
            pending[param_name] = (param_value_internal, distribution)
            own = self._own.get(trial_id)
            if own is not None:
                own[0][param_name] = distribution.to_external_repr(param_value_internal)
                own[1][param_name] = distribution
            self._last_buffered = time.monotonic()
            self._schedule()

    def _study_of_updatable(self, trial_id: int) -> int:
        """The trial's study, checking once per trial that it is still updatable."""
        study_id = self._trial_study.get(trial_id)
        if study_id is None:
            with _create_scoped_session(self.scoped_session) as session:
                trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
                self.check_trial_is_updatable(trial_id, trial.state)
                study_id = trial.study_id
            self._trial_study[trial_id] = study_id
        return study_id

    def _prefetch_distributions(self, study_id: int) -> None:
        """Learn the stored distributions from the study's first and last trials with
        parameters (one query instead of one per name; other names are still looked up)."""
        p, t = models.TrialParamModel, models.TrialModel
        # the study's trials in id order, down the study index, stopping at the first with a
        # parameter (an index lookup each): no scan of the parameter table
        with_params = (
            sqlalchemy.select(t.trial_id)
            .where(t.study_id == study_id)
            .where(sqlalchemy.exists().where(p.trial_id == t.trial_id))
            .limit(1)
        )
        with _create_scoped_session(self.scoped_session) as session:
            low = session.execute(with_params.order_by(t.trial_id)).scalar()
            high = session.execute(with_params.order_by(t.trial_id.desc())).scalar()
            rows = session.execute(
                sqlalchemy.select(p.param_name, p.distribution_json)
                .where(p.trial_id.in_([low, high]))
                .order_by(p.param_id)
            ).all()
        for name, text in rows:
            self._known.setdefault((study_id, name), self._dists.parse(text))
        self._prefetched[study_id] = low is not None

    def _stored_distribution(self, study_id: int, name: str) -> BaseDistribution | None:
        """The distribution stored for ``name`` in the study (the stock compatibility query)."""
        with _create_scoped_session(self.scoped_session) as session:
            record = (
                session.query(models.TrialParamModel.distribution_json)
                .join(models.TrialModel)
                .filter(models.TrialModel.study_id == study_id)
                .filter(models.TrialParamModel.param_name == name)
                .first()
            )
        return None if record is None else self._dists.parse(record[0])

    def _schedule(self) -> None:
        if self._flush_after is None or self._timer is not None:
            return
        self._timer = threading.Timer(self._flush_after, self._on_timer)
        self._timer.daemon = True
        self._timer.start()

    def _on_timer(self) -> None:
        with self._buffer_lock:
            self._timer = None
            if not self._pending:
                return
            assert self._flush_after is not None
            idle = time.monotonic() - self._last_buffered
            if idle < self._flush_after:  # still suggesting: look again later
                self._timer = threading.Timer(self._flush_after - idle, self._on_timer)
                self._timer.daemon = True
                self._timer.start()
                return
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - the trial's next write raises it again
                _logger.warning(f"writing buffered trial parameters failed: {exc!r}")

    # ------------------------------------------------------------------ flushing
    def flush(self, trial_id: int | None = None) -> None:
        """Write the buffered parameters of ``trial_id`` (default: of every trial)."""
        with self._buffer_lock:
            ids = list(self._pending) if trial_id is None else [trial_id]
            for tid in ids:
                rows = self._pending.pop(tid, None)
                if rows:
                    self._write(tid, rows)

    def _write(self, trial_id: int, rows: dict[str, tuple[float, BaseDistribution]]) -> None:
        values = [
            {
                "trial_id": trial_id,
                "param_name": name,
                "param_value": value,
                "distribution_json": self._dists.dump(dist),
            }
            for name, (value, dist) in rows.items()
        ]
        with _create_scoped_session(self.scoped_session) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
            self.check_trial_is_updatable(trial_id, trial.state)
            session.connection().execute(models.TrialParamModel.__table__.insert(), values)
        self._written.setdefault(trial_id, set()).update(rows)

    def _forget(self, trial_id: int) -> None:
        self._written.pop(trial_id, None)
        self._trial_study.pop(trial_id, None)

    # ------------------------------------------------------------------ trials run here
    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> Any:
        frozen = super()._create_new_trial(study_id, template_trial)
        self._adopt(frozen)
        return frozen

    def _adopt(self, trial: FrozenTrial) -> None:
        """Keep ``trial`` (running here) for its later reads."""
        with self._buffer_lock:
            if trial.state != TrialState.RUNNING:
                return
            mine = _copy(trial)
            self._running[trial._trial_id] = mine
            self._own[trial._trial_id] = (mine.params, mine.distributions)  # the same dicts
            self._own_finished.pop(trial._trial_id, None)

    def _disown(self, trial_id: int) -> None:
        self._own.pop(trial_id, None)
        self._own_finished.pop(trial_id, None)
        self._running.pop(trial_id, None)

    def _update_running(self, trial_id: int, change: Any) -> None:
        with self._buffer_lock:
            trial = self._running.get(trial_id)
            if trial is not None:
                change(trial)

    def _owned(self) -> dict[int, tuple[dict[str, Any], dict[str, BaseDistribution]]]:
        """A snapshot of the parameters of the trials run here (for a read)."""
        with self._buffer_lock:
            return {tid: (dict(p), dict(d)) for tid, (p, d) in self._own.items()}

    # ------------------------------------------------------------------ writes flush first
    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        with self._buffer_lock:
            self.flush(trial_id)
            if state.is_finished():
                self._forget(trial_id)
        try:
            updated = super().set_trial_state_values(trial_id, state, values)
        except Exception:
            with self._buffer_lock:
                self._disown(trial_id)  # finished elsewhere: read it in full from now on
            raise
        with self._buffer_lock:
            self._running.pop(trial_id, None)  # its state, values or times changed
            if state.is_finished() and trial_id in self._own:
                self._own_finished[trial_id] = None
                while len(self._own_finished) > _MAX_OWN_FINISHED:
                    self._disown(next(iter(self._own_finished)))
            elif not updated:
                self._disown(trial_id)
        if updated and state == TrialState.RUNNING:  # a waiting trial claimed here
            with self._buffer_lock:
                self._disown(trial_id)
            self._adopt(self.get_trial(trial_id))
        return updated

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        self.flush(trial_id)
        try:
            super().set_trial_intermediate_value(trial_id, step, intermediate_value)
        except Exception:
            self._update_running(trial_id, lambda t: self._disown(trial_id))
            raise
        stored = float(intermediate_value)
        self._update_running(trial_id, lambda t: t.intermediate_values.__setitem__(step, stored))

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.flush(trial_id)
        try:
            super().set_trial_user_attr(trial_id, key, value)
        except Exception:
            self._update_running(trial_id, lambda t: self._disown(trial_id))
            raise
        stored = json.loads(json.dumps(value))  # as read back
        self._update_running(trial_id, lambda t: t.user_attrs.__setitem__(key, stored))

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.flush(trial_id)
        try:
            super().set_trial_system_attr(trial_id, key, value)
        except Exception:
            self._update_running(trial_id, lambda t: self._disown(trial_id))
            raise
        stored = json.loads(json.dumps(value))
        self._update_running(trial_id, lambda t: t.system_attrs.__setitem__(key, stored))

    def record_heartbeat(self, trial_id: int) -> None:
        self.flush(trial_id)
        super().record_heartbeat(trial_id)

    def delete_study(self, study_id: int) -> None:
        with self._buffer_lock:
            for tid in [t for t, s in self._trial_study.items() if s == study_id]:
                self._pending.pop(tid, None)
                self._forget(tid)
            self._own.clear()  # trial ids are not reused, but stay on the safe side
            self._own_finished.clear()
        super().delete_study(study_id)

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

    # ------------------------------------------------------------------ reads see the buffer
    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._buffer_lock:
            running = self._running.get(trial_id)
        if running is not None:
            t = models.TrialModel
            with _create_scoped_session(self.scoped_session) as session:
                state = session.execute(
                    sqlalchemy.select(t.state).where(t.trial_id == trial_id)
                ).scalar_one_or_none()
            with self._buffer_lock:
                if state == TrialState.RUNNING and trial_id in self._running:
                    return _copy(self._running[trial_id])
                self._disown(trial_id)  # finished (or gone) elsewhere: read it in full
        owned = self._owned()  # never take the buffer lock inside a transaction
        with _create_scoped_session(self.scoped_session) as session:
            trials = read_trials(
                session, models.TrialModel.trial_id == trial_id, self._dists, owned
            )
        if not trials:
            raise KeyError(f"No trial with trial_id {trial_id} exists.")
        return self._overlay(trials)[0]

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        with self._buffer_lock:
            row = self._pending.get(trial_id, {}).get(param_name)
        return row[0] if row is not None else super().get_trial_param(trial_id, param_name)

    def _get_trials(
        self,
        study_id: int,
        states: Container[TrialState] | None,
        included_trial_ids: set[int],
        trial_id_greater_than: int,
    ) -> list[FrozenTrial]:
        t = models.TrialModel
        included = {i for i in included_trial_ids if i <= trial_id_greater_than}
        condition = t.study_id == study_id
        if states is not None:
            condition = condition & t.state.in_(list(states))  # type: ignore[call-overload]
        if included and trial_id_greater_than > -1:
            condition = condition & (
                t.trial_id.in_(included) | (t.trial_id > trial_id_greater_than)
            )
        elif trial_id_greater_than > -1:
            condition = condition & (t.trial_id > trial_id_greater_than)
        owned = self._owned()  # never take the buffer lock inside a transaction
        with _create_scoped_session(self.scoped_session) as session:
            models.StudyModel.find_or_raise_by_id(study_id, session)  # KeyError as stock
            trials = read_trials(session, condition, self._dists, owned, self._read_params)
        with self._buffer_lock:  # finished trials are now in the reader's hands
            for trial in trials:
                if trial.state.is_finished() and trial._trial_id in self._own_finished:
                    self._disown(trial._trial_id)
        return self._overlay(trials)

    def _read_params(
        self, trial_ids: list[int]
    ) -> dict[int, tuple[dict[str, Any], dict[str, BaseDistribution]]]:
        """The stored parameters of finished trials (for lazily read trials)."""
        with _create_scoped_session(self.scoped_session) as session:
            return read_params_by_id(session, trial_ids, self._dists)

    def _overlay(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        """Add the buffered parameters to trials just read (fresh objects, safe to change)."""
        with self._buffer_lock:
            if not self._pending:
                return trials
            for trial in trials:
                if trial._trial_id in self._own:
                    continue  # its buffered parameters are in the copy already
                rows = self._pending.get(trial._trial_id)
                for name, (value, dist) in (rows or {}).items():
                    trial.params[name] = dist.to_external_repr(value)
                    trial.distributions[name] = dist
        return trials


def _process_state() -> list[str]:
    """The attributes ``_init_buffer`` makes: this process's buffer, locks and caches."""
    blank = object.__new__(BatchedRDBStorage)
    blank._init_buffer()
    return list(vars(blank))


def _copy(trial: FrozenTrial) -> FrozenTrial:
    """A copy of ``trial`` whose dicts (and attribute values) can be changed freely."""
    return FrozenTrial(
        number=trial.number,
        state=trial.state,
        value=None,
        values=None if trial.values is None else list(trial.values),
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
        params=dict(trial.params),
        distributions=dict(trial.distributions),
        user_attrs=copy.deepcopy(trial.user_attrs),
        system_attrs=copy.deepcopy(trial.system_attrs),
        intermediate_values=dict(trial.intermediate_values),
        trial_id=trial._trial_id,
    )


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
