"""The write side of :class:`~evolver_opt.runtime.batched_storage.BatchedRDBStorage`: a trial's
parameters are buffered in memory (their distributions checked as the stock storage checks
them) and written in one transaction, by :meth:`~_BatchedWrites.flush`, before any other write
of that trial, or by a timer once the trial stops suggesting.

The state these methods share with the read side is made by ``BatchedRDBStorage._init_buffer``.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import optuna
import sqlalchemy
from optuna import distributions
from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState

from evolver_opt.runtime.batched_reads import _MAX_OWN_FINISHED, _Owned
from evolver_opt.runtime.trial_reader import DistributionCache

# the public class's module: the logger's name stays as it was before the split
_logger = optuna.logging.get_logger("evolver_opt.runtime.batched_storage")

# trial_id -> {param name: (internal value, distribution)}, in suggestion order
_Pending = dict[int, dict[str, tuple[float, BaseDistribution]]]


class _BatchedWrites(RDBStorage):
    """Buffered parameter writes; every other write of a trial flushes its parameters first."""

    _buffer_lock: threading.RLock
    _flush_after: float | None
    _pending: _Pending
    _written: dict[int, set[str]]
    _trial_study: dict[int, int]
    _known: dict[tuple[int, str], BaseDistribution]
    _dists: DistributionCache
    _prefetched: dict[int, bool]
    _own: dict[int, _Owned]
    _own_finished: dict[int, None]
    _running: dict[int, FrozenTrial]
    _interned: dict[BaseDistribution, BaseDistribution]
    _last_buffered: float
    _timer: threading.Timer | None

    # _adopt, _disown and _update_running are the read side's (batched_reads.py)

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
