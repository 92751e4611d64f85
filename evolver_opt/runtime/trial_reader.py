"""Read trials from Optuna's RDB schema with plain SQL rows instead of ORM objects.

``RDBStorage`` loads each trial as ORM objects and parses every parameter's distribution JSON
twice; a study of 2000 trials x 400 parameters takes seconds to load. This reader issues one
``SELECT`` per table (filtered by the same trial condition), parses each distinct distribution
JSON once (a study has a handful), and builds the same :class:`~optuna.trial.FrozenTrial`
objects: same numbers, states, values, parameters in ``param_id`` order, attributes,
intermediate values and (local, naive) datetimes.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy
from optuna import distributions
from optuna.distributions import BaseDistribution
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial

from evolver_opt.runtime.lazy_params import ParamLoader, ReadParams

__all__ = ["LAZY_MIN", "DistributionCache", "read_params", "read_params_by_id", "read_trials"]

LAZY_MIN = 256  # finished trials in one read from which their parameters are read lazily

_T = models.TrialModel.__table__
_P = models.TrialParamModel.__table__
_V = models.TrialValueModel.__table__
_U = models.TrialUserAttributeModel.__table__
_S = models.TrialSystemAttributeModel.__table__
_I = models.TrialIntermediateValueModel.__table__


class DistributionCache:
    """Distribution JSON <-> objects, each distinct string parsed once (they never change)."""

    def __init__(self) -> None:
        self.parsed: dict[str, tuple[BaseDistribution, bool]] = {}
        self._dumped: dict[BaseDistribution, str] = {}

    def parse(self, text: str) -> BaseDistribution:
        return (self.parsed.get(text) or self.entry(text))[0]

    def entry(self, text: str) -> tuple[BaseDistribution, bool]:
        """(distribution, whether its external value is the stored float itself)."""
        dist = distributions.json_to_distribution(text)
        entry = self.parsed[text] = (dist, isinstance(dist, distributions.FloatDistribution))
        return entry

    def dump(self, dist: BaseDistribution) -> str:
        text = self._dumped.get(dist)
        if text is None:
            text = self._dumped[dist] = distributions.distribution_to_json(dist)
        return text


def _local(utc: datetime.datetime | None) -> datetime.datetime | None:
    """Stored naive UTC -> naive local time, as ``TrialModel.datetime_start`` does."""
    if utc is None:
        return None
    return utc.replace(tzinfo=datetime.UTC).astimezone().replace(tzinfo=None)


def read_trials(
    session: Any,
    condition: Any,
    cache: DistributionCache,
    known: Mapping[int, tuple[dict[str, Any], dict[str, BaseDistribution]]] | None = None,
    lazy: ReadParams | None = None,
) -> list[FrozenTrial]:
    """Trials of ``trials`` rows matching ``condition`` (a SQL expression), by trial id.

    ``known``: trial id -> (params, distributions) the caller knows to be exactly the trial's
    stored parameters (its own trials); their parameter rows are not read (copies are used).
    ``lazy``: when given and at least ``LAZY_MIN`` finished trials are read, their parameters
    are read on first use through it (see ``lazy_params.py``).
    """
    ids = sqlalchemy.select(_T.c.trial_id).where(condition)
    conn = session.connection()  # Core execution: no ORM statement handling per query
    rows = conn.execute(
        sqlalchemy.select(
            _T.c.trial_id,
            _T.c.number,
            models.TrialModel.state,  # the ORM column: its Enum type gives TrialState
            _T.c.datetime_start,
            _T.c.datetime_complete,
        )
        .where(condition)
        .order_by(_T.c.trial_id)
    ).all()
    if not rows:
        return []
    params: dict[int, dict[str, Any]] = {r[0]: {} for r in rows}
    dists: dict[int, dict[str, BaseDistribution]] = {r[0]: {} for r in rows}
    skip = {r[0] for r in rows if known and r[0] in known}
    for trial_id in skip:
        params[trial_id], dists[trial_id] = (dict(m) for m in known[trial_id])  # type: ignore[index]
    deferred = {r[0] for r in rows if r[2].is_finished() and r[0] not in skip}
    if lazy is None or len(deferred) < LAZY_MIN:
        deferred = set()
    else:  # a lazy trial always has parameters: ``has_params`` needs no read
        no_params = ids.where(~sqlalchemy.exists().where(_P.c.trial_id == _T.c.trial_id))
        deferred.difference_update(conn.execute(no_params).scalars())
    loader = ParamLoader(lazy) if deferred and lazy is not None else None
    if deferred:  # read the few others by id
        eager = [r[0] for r in rows if r[0] not in skip and r[0] not in deferred]
        if eager:
            read_params(session, _P.c.trial_id.in_(eager), cache, params, dists)
    elif len(skip) < len(rows):
        param_ids = ids.where(_T.c.trial_id.not_in(sorted(skip))) if skip else ids
        read_params(session, _P.c.trial_id.in_(param_ids), cache, params, dists)
    values: dict[int, dict[int, float]] = {}
    for trial_id, objective, value, kind in conn.execute(
        sqlalchemy.select(
            _V.c.trial_id, _V.c.objective, _V.c.value, models.TrialValueModel.value_type
        ).where(_V.c.trial_id.in_(ids))
    ):
        stored = models.TrialValueModel.stored_repr_to_value(value, kind)
        values.setdefault(trial_id, {})[objective] = stored
    user = _attrs(conn, _U, ids)
    system = _attrs(conn, _S, ids)
    intermediate: dict[int, dict[int, float]] = {}
    for trial_id, step, value, kind in conn.execute(
        sqlalchemy.select(
            _I.c.trial_id,
            _I.c.step,
            _I.c.intermediate_value,
            models.TrialIntermediateValueModel.intermediate_value_type,
        ).where(_I.c.trial_id.in_(ids))
    ):
        stored = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(value, kind)
        intermediate.setdefault(trial_id, {})[step] = stored
    out = []
    for trial_id, number, state, start, complete in rows:
        objectives = values.get(trial_id)
        fields = {
            "number": number,
            "state": state,
            "value": None,
            "values": [objectives[k] for k in sorted(objectives)] if objectives else None,
            "datetime_start": _local(start),
            "datetime_complete": _local(complete),
            "user_attrs": user.get(trial_id, {}),
            "system_attrs": system.get(trial_id, {}),
            "intermediate_values": intermediate.get(trial_id, {}),
            "trial_id": trial_id,
        }
        if trial_id in deferred:
            out.append(loader.make(**fields))  # type: ignore[union-attr]
        else:
            out.append(
                FrozenTrial(params=params[trial_id], distributions=dists[trial_id], **fields)
            )
    return out


def read_params_by_id(
    session: Any, trial_ids: list[int], cache: DistributionCache
) -> dict[int, tuple[dict[str, Any], dict[str, BaseDistribution]]]:
    """trial id -> (params, distributions) as stored, for each of ``trial_ids``."""
    params: dict[int, dict[str, Any]] = {i: {} for i in trial_ids}
    dists: dict[int, dict[str, BaseDistribution]] = {i: {} for i in trial_ids}
    read_params(session, _P.c.trial_id.in_(trial_ids), cache, params, dists)
    return {i: (params[i], dists[i]) for i in trial_ids}


def read_params(
    session: Any,
    condition: Any,
    cache: DistributionCache,
    params: dict[int, dict[str, Any]],
    dists: dict[int, dict[str, BaseDistribution]],
) -> None:
    """Fill ``params``/``dists`` (trial id -> dict, for every trial id the rows may name) from
    the ``trial_params`` rows matching ``condition``, in ``param_id`` order.

    The bulk of a study (trials x parameters rows): read on the DBAPI cursor, each distinct
    distribution parsed once, float values used as they come (the stock external repr)."""
    parsed = cache.parsed
    current, p, d = None, params, dists
    for trial_id, name, value, text in _raw_rows(
        session,
        sqlalchemy.select(_P.c.trial_id, _P.c.param_name, _P.c.param_value, _P.c.distribution_json)
        .where(condition)
        .order_by(_P.c.trial_id, _P.c.param_id),
    ):
        if trial_id != current:
            current, p, d = trial_id, params[trial_id], dists[trial_id]
        entry = parsed.get(text) or cache.entry(text)
        p[name] = float(value) if entry[1] else entry[0].to_external_repr(value)
        d[name] = entry[0]


def _raw_rows(session: Any, statement: Any) -> list[tuple]:
    """Rows of ``statement`` (integer literals only) from the DBAPI cursor of the session's
    connection: no per-row result processing."""
    connection = session.connection()
    sql = str(statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        cursor.execute(sql)
        return cursor.fetchall()
    finally:
        cursor.close()


def _attrs(conn: Any, table: Any, ids: Any) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for trial_id, key, text in conn.execute(
        sqlalchemy.select(table.c.trial_id, table.c.key, table.c.value_json)
        .where(table.c.trial_id.in_(ids))
        .order_by(table.c.trial_id, *table.primary_key.columns)
    ):
        out.setdefault(trial_id, {})[key] = json.loads(text)
    return out
