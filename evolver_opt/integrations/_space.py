"""The numeric search space shared by our Optuna samplers: parameters <-> a bounded vector.

Floats and ints map to one coordinate each (log-scaled ones in log space; stepped ones are
rounded back onto their grid), so an optimizer over a box can drive any numeric distribution.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


def is_numeric(distribution: BaseDistribution) -> bool:
    return isinstance(distribution, (FloatDistribution, IntDistribution))


def name_salt(name: str) -> int:
    """A stable integer per parameter name (for per-parameter random streams)."""
    return zlib.crc32(name.encode("utf-8"))


class NumericSpace:
    """Ordered numeric parameters (sorted by name) as a box ``[lower, upper]``."""

    def __init__(self, distributions: Mapping[str, BaseDistribution]) -> None:
        self.distributions = {
            k: distributions[k] for k in sorted(distributions) if is_numeric(distributions[k])
        }
        self.names = list(self.distributions)
        bounds = [_internal_bounds(d) for d in self.distributions.values()]
        self.lower = np.array([b[0] for b in bounds], dtype=float)
        self.upper = np.array([b[1] for b in bounds], dtype=float)
        dists = list(self.distributions.values())
        # coordinates that are not a plain float (log, step, int): converted one by one
        self._special = [
            j
            for j, d in enumerate(dists)
            if not (isinstance(d, FloatDistribution) and not d.log and d.step is None)
        ]
        self.key = tuple(self.distributions.items())  # equal spaces, equal keys

    @property
    def dim(self) -> int:
        return len(self.names)

    def to_vector(self, params: Mapping[str, Any], fill: np.ndarray | None = None) -> np.ndarray:
        """Internal vector of ``params``; a missing name takes ``fill`` (default: mid-point)."""
        default = (self.lower + self.upper) / 2.0 if fill is None else fill
        out = np.array([params.get(name, np.nan) for name in self.names], dtype=float)
        for j in self._special:
            if not np.isnan(out[j]):
                out[j] = _to_internal(self.distributions[self.names[j]], out[j])
        missing = np.isnan(out)
        out[missing] = default[missing]
        return out

    def to_params(self, vector: np.ndarray) -> dict[str, Any]:
        """External parameter values (Python floats/ints inside each distribution)."""
        if len(vector) != self.dim:
            raise ValueError(f"vector of length {len(vector)} for a space of {self.dim}")
        # a plain float's internal bounds are its own: clip; the others are converted below
        values = np.minimum(np.maximum(vector, self.lower), self.upper).tolist()
        for j in self._special:
            values[j] = _to_external(self.distributions[self.names[j]], float(vector[j]))
        return dict(zip(self.names, values, strict=True))


def random_value(distribution: BaseDistribution, rng: np.random.Generator) -> Any:
    """One uniform draw from any distribution, in its external representation."""
    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[int(rng.integers(len(distribution.choices)))]
    low, high = _internal_bounds(distribution)
    return _to_external(distribution, low + rng.random() * (high - low))


def _internal_bounds(d: BaseDistribution) -> tuple[float, float]:
    if isinstance(d, (FloatDistribution, IntDistribution)):
        if d.log:
            return math.log(d.low), math.log(d.high)
        half = 0.5 * d.step if d.step is not None else 0.0
        return d.low - half, d.high + half
    raise TypeError(f"{d!r} is not numeric")


def _to_internal(d: BaseDistribution, value: float) -> float:
    assert isinstance(d, (FloatDistribution, IntDistribution))
    return math.log(value) if d.log else float(value)


def _to_external(d: BaseDistribution, v: float) -> Any:
    assert isinstance(d, (FloatDistribution, IntDistribution))
    x = math.exp(v) if d.log else v
    if d.step is not None:
        x = d.low + round((x - d.low) / d.step) * d.step
    x = min(max(x, d.low), d.high)
    if isinstance(d, IntDistribution):
        return round(x)
    return float(x)
