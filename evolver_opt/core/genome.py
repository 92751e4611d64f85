"""The coefficient layout of a merge search, and its start points: numpy only.

One coefficient per (model, group), named ``w.<model>.<group>``; as a matrix ``(n_models,
n_groups)``; as a flat vector in ``param_names`` order (model-major).

Example::

    >>> g = Genome(("a", "b"), ("embeddings", "layer.0"))
    >>> g.param_names
    ('w.a.embeddings', 'w.a.layer.0', 'w.b.embeddings', 'w.b.layer.0')
    >>> g.split("w.b.layer.0")
    ('b', 'layer.0')
    >>> g.matrix(g.params(g.uniform())).tolist()
    [[0.5, 0.5], [0.5, 0.5]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from evolver_opt.errors import ConfigError

PREFIX = "w."
MAX_PARAM_NAME = 511  # Optuna stores parameter names in a 512-character column

Coefficients = np.ndarray | Mapping[str, float] | Sequence[float] | Sequence[Sequence[float]]


def _split(name: str, models: Sequence[str]) -> tuple[str, str]:
    if not name.startswith(PREFIX):
        raise ConfigError(f"parameter {name!r} is not a merge coefficient 'w.<model>.<group>'")
    rest = name[len(PREFIX) :]
    for model in sorted(models, key=len, reverse=True):  # the longest known model first
        if rest.startswith(model + "."):
            return model, rest[len(model) + 1 :]
    model, _, group = rest.partition(".")
    if not group:
        raise ConfigError(f"parameter {name!r} has no group; expected 'w.<model>.<group>'")
    return model, group


@dataclass(frozen=True)
class Genome:
    """The coefficients of ``models`` x ``groups``: names, matrix, flat vector, start points."""

    models: tuple[str, ...]
    groups: tuple[str, ...]
    param_names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # every name checked here, so a bad layout fails at once
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "groups", tuple(self.groups))
        names = tuple(self.param_name(m, g) for m in self.models for g in self.groups)
        object.__setattr__(self, "param_names", names)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], models: Sequence[str] = ()) -> Genome:
        """The layout of stored trial params (their ``w.`` names). ``models`` settles names with
        dots and gives the order; then models not in it are left out. Groups in first-seen order."""
        cells = [_split(n, models) for n in params if n.startswith(PREFIX)]
        present = dict.fromkeys(m for m, _ in cells)
        order = [m for m in (models or present) if m in present]
        return cls(tuple(order), tuple(dict.fromkeys(g for _, g in cells)))

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.models), len(self.groups)

    @cached_property
    def _index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.param_names)}

    @staticmethod
    def param_name(model: str, group: str) -> str:
        """``w.<model>.<group>``, checked to fit Optuna's 512-character limit."""
        name = f"{PREFIX}{model}.{group}"
        if len(name) > MAX_PARAM_NAME:
            raise ConfigError(
                f"coefficient name is {len(name)} characters (> {MAX_PARAM_NAME}): {name}"
            )
        return name

    def split(self, name: str) -> tuple[str, str]:
        """``w.<model>.<group>`` -> (model, group); the known models settle names with dots."""
        return _split(name, self.models)

    def model_index(self, model: int | str) -> int:
        """The row of ``model`` (a name or an index)."""
        if isinstance(model, str):
            if model not in self.models:
                raise ConfigError(f"model {model!r} is not one of {list(self.models)}")
            return self.models.index(model)
        if not 0 <= int(model) < len(self.models):
            raise ConfigError(f"model index {model} is outside [0, {len(self.models)})")
        return int(model)

    def matrix(self, coefficients: Coefficients) -> np.ndarray:
        """Validated float64 ``(n_models, n_groups)`` from an array, flat vector or name -> value
        (other names than ``w.`` ones are ignored)."""
        names, shape = self.param_names, self.shape
        if isinstance(coefficients, Mapping):
            missing = [n for n in names if n not in coefficients]
            unknown = [k for k in coefficients if k.startswith(PREFIX) and k not in self._index]
            if missing or unknown:
                raise ConfigError(
                    f"coefficients miss {missing[:3]} and have unknown names {unknown[:3]}; "
                    f"expected the {len(names)} names {list(names[:3])}..."
                )
            arr = np.array([float(coefficients[n]) for n in names]).reshape(shape)
        else:
            arr = np.asarray(coefficients, dtype=np.float64)
            if arr.ndim == 1 and arr.size == len(names):
                arr = arr.reshape(shape)
            if arr.shape != shape:
                raise ConfigError(
                    f"coefficients have shape {arr.shape}, expected {shape} (n_models, n_groups) "
                    f"or a flat vector of {len(names)} in param_names order"
                )
        if not np.isfinite(arr).all():
            bad = [names[i] for i in np.flatnonzero(~np.isfinite(arr.ravel()))[:3]]
            raise ConfigError(f"coefficients must be finite; {bad} are not")
        return arr

    def params(self, coefficients: Coefficients) -> dict[str, float]:
        """name -> value, in ``param_names`` order."""
        return dict(zip(self.param_names, self.matrix(coefficients).ravel().tolist(), strict=True))

    def one_hot(self, model: int | str) -> np.ndarray:
        """1 for ``model`` in every group, 0 elsewhere: that fine-tuned model exactly."""
        c = np.zeros(self.shape)
        c[self.model_index(model)] = 1.0
        return c

    def uniform(self) -> np.ndarray:
        """1/N for every model and group: the plain weighted average."""
        return np.full(self.shape, 1.0 / len(self.models))

    def normalized(self, coefficients: Coefficients, form: str) -> np.ndarray:
        """The matrix as merged: with ``form="average"`` each group divided by its sum (a group
        summing to zero or less becomes 1/N); any other form as it is."""
        c = self.matrix(coefficients)
        if form == "average" and c.size:
            total = c.sum(axis=0, keepdims=True)
            c = np.where(total > 0, c / np.where(total > 0, total, 1.0), 1.0 / c.shape[0])
        return c

    def start_points(self) -> list[dict[str, float]]:
        """Each model alone (one-hot in every group), then the uniform average."""
        return [self.params(self.one_hot(i)) for i in range(len(self.models))] + [
            self.params(self.uniform())
        ]
