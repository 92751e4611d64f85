"""The read side of :class:`~evolver_opt.runtime.batched_storage.BatchedRDBStorage`: the trials
this process runs are kept in memory (a read of one only checks that no other process finished
it), reads use plain SQL rows (``trial_reader.py``), a read of many finished trials leaves their
parameters to be read on first use (``lazy_params.py``), and the parameters still buffered by
the write side are overlaid on every trial read back.

The state these methods share with the write side is made by ``BatchedRDBStorage._init_buffer``.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Container
from typing import Any

import sqlalchemy
from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState

from evolver_opt.runtime.trial_reader import DistributionCache, read_params_by_id, read_trials

_MAX_OWN_FINISHED = 64  # finished trials of this process whose parameters are kept for reads
# a trial's parameters and their distributions (params, distributions)
_Owned = tuple[dict[str, Any], dict[str, BaseDistribution]]


class _BatchedReads(RDBStorage):
    """Reads that keep the trials run here and see the parameters still buffered."""

    _buffer_lock: threading.RLock
    _pending: dict[int, dict[str, tuple[float, BaseDistribution]]]
    _dists: DistributionCache
    _own: dict[int, _Owned]
    _own_finished: dict[int, None]
    _running: dict[int, FrozenTrial]

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
