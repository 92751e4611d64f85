"""What every static merge method is: a name, a reference, declared parameters, a merge."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch

from evolver_opt.errors import ConfigError

if TYPE_CHECKING:
    from evolver_opt.merge.engine import MergeEngine, TensorSlot

Data = Literal["statistics", "examples"] | None


@dataclass
class MergeResult:
    """A finished static merge: what was done, and how to redo it if the engine moved on."""

    method: str
    params: dict[str, Any]
    coefficients: np.ndarray | None
    version: int
    rerun: Callable[[MergeEngine], None] | None = field(default=None, repr=False)

    def ensure_applied(self, engine: MergeEngine) -> None:
        """Make the working model hold this result again (no-op when it still does)."""
        if engine.version == self.version:
            return
        if self.coefficients is not None:
            engine.apply(self.coefficients)
            engine.mark_written({**engine.state, "method": self.method, "params": self.params})
        elif self.rerun is not None:
            self.rerun(engine)
        else:
            raise ConfigError(f"the {self.method} result cannot be re-applied")
        self.version = engine.version


class MergeMethod:
    """Base class. Subclasses set ``name``, ``url``, ``params`` and implement one of
    :meth:`coefficients` (linear methods), :meth:`task_parts` (methods whose merge is a sum of
    per-task parts: the write is derived, and the method can be a study's ``form``) or
    :meth:`write` (everything else).

    The class attributes below are the method's capabilities; every list of methods in the
    project (the CLI's, ``baselines``' grids, ``compare``'s rows, the mergers, the forms and
    start points of a study) is read from the registry through them, never written by hand.
    """

    name: ClassVar[str] = ""
    url: ClassVar[str] = ""
    params: ClassVar[tuple[str, ...]] = ()
    linear: ClassVar[bool] = False  # True: the result is a coefficient array
    # What data the method needs: None (data-free), "statistics" (each expert's statistics on
    # its own training sample, cached beside it, passed as ``statistics_argument``) or
    # "examples" (each expert's training batches, passed as ``examples``).
    data: ClassVar[Data] = None
    statistics_argument: ClassVar[str | None] = None
    # The dev grid ``baselines`` tunes it on (empty: its defaults, scored once).
    grid: ClassVar[tuple[dict[str, Any], ...]] = ()
    reference: ClassVar[bool] = False  # an untuned reference row of every ``compare``
    merger: ClassVar[bool] = True  # usable as ``evolver-merger:<name>`` over a population
    # True: the merge is ``constant + sum_i L_i(theta_i)`` with each ``L_i`` a fixed linear map
    # of model i's weights alone (:meth:`slot_parts`), so a merge over rows that change one at
    # a time is updated by one model's part (the weight-space merger's incremental path).
    separable: ClassVar[bool] = False

    @classmethod
    def has_parts(cls) -> bool:
        """True when the merge is a sum of per-task parts (:meth:`task_parts`): the method is
        then a study ``form`` and its own answer one point of the coefficient space."""
        return cls.task_parts is not MergeMethod.task_parts

    def task_parts(self, engine: MergeEngine, **kwargs: Any) -> Iterator[tuple[TensorSlot, Any]]:
        """Per merged tensor, the ``(n_models, *shape)`` float32 parts whose sum is the
        method's merged task vector at scale 1 (``merge = base + lambda * parts.sum(0)``)."""
        raise ConfigError(f"method {self.name!r} is not a sum of per-task parts")

    def slot_parts(self, engine: MergeEngine, **kwargs: Any) -> SlotParts:
        """The merge's per-model linear maps (``separable`` methods), for the parameters that
        :meth:`merge` takes; the statistics are read here, once."""
        raise ConfigError(f"method {self.name!r} is not separable per model")

    def coefficients(self, engine: MergeEngine, **kwargs: Any) -> np.ndarray:
        """The merge as an ``(n_models, n_groups)`` coefficient array, where expressible."""
        raise ConfigError(
            f"method {self.name!r} is not linear in the models and has no coefficient form; "
            "use merge() (methods with one: average, task_arithmetic)"
        )

    def write(self, engine: MergeEngine, **kwargs: Any) -> None:
        """Write the merge into the engine's working model (non-linear methods); a method with
        parts writes ``base + lambda * sum_i part_i`` tensor by tensor."""
        if not self.has_parts():
            engine.apply(self.coefficients(engine, **kwargs))
            return
        scale = check_scale(kwargs.pop("lambda_", 1.0))
        with torch.no_grad():
            for slot, parts in self.task_parts(engine, **kwargs):
                slot.out.copy_(slot.base.float() + scale * parts.sum(dim=0))

    def merge(self, engine: MergeEngine, **kwargs: Any) -> MergeResult:
        """Run the method on ``engine`` (the working model then holds it); return the result."""
        kwargs = self.check_params(kwargs)
        params = _jsonable({**self.defaults(), **kwargs})  # the recipe says what was used
        if self.linear:
            coef = self.coefficients(engine, **kwargs)
            engine.apply(coef)
            engine.mark_written({**engine.state, "method": self.name, "params": params})
            return MergeResult(self.name, params, coef, engine.version)

        def rerun(e: MergeEngine) -> None:
            self.write(e, **kwargs)
            e.mark_written({"method": self.name, "params": params})

        rerun(engine)
        return MergeResult(self.name, params, None, engine.version, rerun)

    def defaults(self) -> dict[str, Any]:
        """The declared parameters' default values (from ``write`` or ``coefficients``)."""
        impl = self.coefficients if self.linear else self.write
        out = {}
        if self.has_parts() and type(self).write is MergeMethod.write:  # the derived write
            impl = self.task_parts
            out = {"lambda_": 1.0} if "lambda_" in self.params else {}
        out.update(
            (name, p.default)
            for name, p in inspect.signature(impl).parameters.items()
            if name in self.params and p.default is not inspect.Parameter.empty
        )
        return out

    def check_params(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Map ``lambda`` to ``lambda_`` and refuse undeclared parameters."""
        out = {("lambda_" if k == "lambda" else k): v for k, v in kwargs.items()}
        unknown = sorted(set(out) - set(self.params))
        if unknown:
            raise ConfigError(
                f"method {self.name!r} has no parameter {unknown}; it takes {list(self.params)}"
            )
        return out


class SlotParts:
    """A separable merge: ``merged = constant + sum_i L_i(theta_i)`` per merged tensor, each
    ``L_i`` linear in model i's weights alone. This base is the weighted average
    (``L_i(x) = w_i x``, no constant); methods override :meth:`part` and :meth:`constant`.
    Everything is float64 in each tensor's stored shape."""

    def __init__(self, weights: Sequence[float]) -> None:
        self.weights = [float(w) for w in weights]

    def constant(self, tensor: TensorSlot) -> torch.Tensor | None:
        """The merge's term that no model's weights enter (None: zero)."""
        return None

    def part(self, i: int, tensor: TensorSlot, x: torch.Tensor) -> torch.Tensor:
        """``L_i(x)`` for merged tensor ``tensor``, ``x`` holding model i's values of it."""
        return x.double() * self.weights[i]


def _jsonable(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the JSON-friendly parameters (examples are data, not recipe)."""
    out = {}
    for k, v in kwargs.items():
        if v is None or isinstance(v, (int, float, str, bool)):
            out[k] = v
        elif isinstance(v, (list, tuple, np.ndarray)) and k == "weights":
            out[k] = [float(x) for x in v]
    return out


def model_weights(weights: Sequence[float] | None, n: int, *, normalize: bool) -> np.ndarray:
    """Per-model weights (default all ones), checked for length and, if asked, normalized."""
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != (n,):
        raise ConfigError(f"weights has {w.size} values {w.tolist()}, expected {n} (one per model)")
    if not np.isfinite(w).all():
        raise ConfigError(f"weights must be finite, got {w.tolist()}")
    if normalize:
        total = w.sum()
        if total <= 0 or (w < 0).any():
            raise ConfigError(f"weights must be >= 0 with a positive sum, got {w.tolist()}")
        w = w / total
    return w


def check_scale(scale: float) -> float:
    """A finite task-vector scale (``lambda``)."""
    if not np.isfinite(float(scale)):
        raise ConfigError(f"lambda={scale} must be a finite number")
    return float(scale)


def task_vectors(slot: TensorSlot, weights: Sequence[float] | None = None) -> torch.Tensor:
    """The slot's task vectors ``(n_models, *shape)`` in float32, times ``weights``."""
    base = slot.base.float()
    taus = torch.stack([m.float() - base for m in slot.models])
    if weights is not None:
        w = torch.as_tensor(list(weights), dtype=taus.dtype, device=taus.device)
        taus *= w.view(-1, *[1] * base.dim())
    return taus


def is_matrix(slot: TensorSlot) -> bool:
    """A 2-D tensor the spectral methods factorize (everything else: the mean task vector)."""
    return len(slot.shape) == 2 and min(slot.shape) > 1


def check_density(density: float) -> float:
    """A keep-fraction in (0, 1]."""
    if not 0.0 < float(density) <= 1.0:
        raise ConfigError(f"density={density} must be in (0, 1]")
    return float(density)


def keep_count(numel: int, density: float) -> int:
    """How many entries a tensor keeps at ``density``: ``round(density * numel)``, at least 1."""
    return max(1, min(numel, round(density * numel)))
