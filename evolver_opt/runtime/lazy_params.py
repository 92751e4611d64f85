"""Finished trials whose parameters are read from the database on first use.

A resumed process's first ``ask`` makes Optuna's cache read every trial of the study; with
2000 trials x 400 parameters that is 800k parameter rows (over a second on SQLite) although
most samplers then look at the parameters of a few trials only (Evolver: its population;
RandomSampler: none). :class:`LazyParamsTrial` is a :class:`~optuna.trial.FrozenTrial` whose
``params`` and ``distributions`` are read when first used. A :class:`ParamLoader` reads them
for one trial at a time, and once ``BULK_AFTER`` trials of one read have been asked for, for
all of that read's remaining trials in one query (a sampler that looks at every trial, like
TPE, pays one bulk read, as before).

A lazy trial always has parameters (``has_params`` answers without a read). Copies and
pickles of a lazy trial are plain, complete ``FrozenTrial`` objects; equality and
``repr`` are those of the complete trial.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

__all__ = ["BULK_AFTER", "LazyParamsTrial", "ParamLoader", "has_params"]

BULK_AFTER = 100  # single-trial reads of one loader before it reads all its remaining trials

# trial ids -> {trial id: (params, distributions)}
ReadParams = Callable[[list[int]], dict[int, tuple[dict[str, Any], dict[str, BaseDistribution]]]]
_LAZY = ("_params", "_distributions")
# FrozenTrial's attributes in the order its constructor sets them (repr and copies keep it)
_FIELDS = tuple(
    FrozenTrial(0, TrialState.RUNNING, None, None, None, {}, {}, {}, {}, {}, 0).__dict__
)


class ParamLoader:
    """Reads the parameters of the lazy trials of one storage read (thread-safe)."""

    def __init__(self, read: ReadParams) -> None:
        self._read = read
        self._waiting: weakref.WeakValueDictionary[int, LazyParamsTrial] = (
            weakref.WeakValueDictionary()
        )
        self._single_reads = 0
        self._lock = threading.Lock()

    def make(self, **fields: Any) -> LazyParamsTrial:
        """A lazy trial with ``fields`` as for ``FrozenTrial`` (without params/distributions)."""
        trial = LazyParamsTrial(params={}, distributions={}, **fields)
        for name in _LAZY:
            del trial.__dict__[name]
        trial._loader = self
        self._waiting[trial._trial_id] = trial
        return trial

    def load(self, trial: LazyParamsTrial) -> None:
        with self._lock:
            if "_params" in trial.__dict__:  # another thread has just read it
                return
            self._single_reads += 1
            ids = [trial._trial_id]
            if self._single_reads > BULK_AFTER:
                ids += [i for i in list(self._waiting.keys()) if i != trial._trial_id]
            rows = self._read(ids)
            for trial_id in ids:
                waiting = trial if trial_id == trial._trial_id else self._waiting.get(trial_id)
                self._waiting.pop(trial_id, None)
                if waiting is not None and "_params" not in waiting.__dict__:
                    params, dists = rows.get(trial_id, ({}, {}))
                    waiting.__dict__.update(_params=params, _distributions=dists)


class LazyParamsTrial(FrozenTrial):
    """A finished ``FrozenTrial`` whose ``params``/``distributions`` its loader reads on first
    use (see the module docstring)."""

    __slots__ = ("_loader",)  # outside ``__dict__``: FrozenTrial's equality compares that
    _loader: ParamLoader
    # The samplers ask this (integrations._population.has_params) instead of importing this
    # module: a lazy trial always has parameters (the reader leaves trials without any eager).
    always_has_params = True

    def __getattr__(self, name: str) -> Any:  # only called for attributes not set yet
        if name in _LAZY:
            self._loader.load(self)
            return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def plain(self) -> FrozenTrial:
        """A complete ``FrozenTrial`` sharing this trial's values (a shallow copy)."""
        return _plain({name: getattr(self, name) for name in _FIELDS})

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        # copy.copy, copy.deepcopy and pickle all give a plain FrozenTrial
        return _plain, ({name: getattr(self, name) for name in _FIELDS},)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyParamsTrial):
            other = other.plain()
        return self.plain() == other

    __hash__ = FrozenTrial.__hash__

    def __repr__(self) -> str:
        return repr(self.plain())


def has_params(trial: FrozenTrial) -> bool:
    """Whether ``trial`` has parameters, without reading a lazy trial's (it always has some:
    the reader leaves trials without parameters eager)."""
    return isinstance(trial, LazyParamsTrial) or bool(trial.params)


def _plain(state: dict[str, Any]) -> FrozenTrial:
    trial = FrozenTrial.__new__(FrozenTrial)
    trial.__dict__.update(state)
    return trial
