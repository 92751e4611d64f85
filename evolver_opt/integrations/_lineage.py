"""The lineage of a trial drawn by EvolverSampler: one JSON system attribute per trial."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from evolver_opt.errors import StateError

PREFIX = "evolver:"
# One trial system attribute holds a trial's whole lineage, written in one call, so that no
# reader ever sees half of it.
KEY_LINEAGE = PREFIX + "lineage"
KEY_POPULATION = PREFIX + "population"  # study system attr: {"size": P, "n_enqueued": E}

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass(frozen=True)
class Lineage:
    """What the sampler decided for one trial (also stored as ``evolver:*`` system attrs)."""

    index: int
    role: str  # "init" or "offspring"
    slot: int
    references: tuple[int, ...] = ()
    reference_kind: str | None = None
    parent_trial: int | None = None
    parent_value: float | None = None
    trial: int = -1  # number of the trial it was drawn for (a retry keeps the original's)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> Lineage | None:
        raw = attrs.get(KEY_LINEAGE)
        if raw is None:
            return None
        try:
            if not isinstance(raw, dict):
                raise TypeError(f"expected a JSON object, got {type(raw).__name__}")
            role = raw["role"]
            if role not in ("init", "offspring"):
                raise ValueError(f"role {role!r}")
            parent_value = raw.get("parent_value")
            parent_trial = raw.get("parent_trial")
            return cls(
                index=as_int(raw["index"]),
                role=role,
                slot=as_int(raw["slot"]),
                references=tuple(as_int(r) for r in raw.get("references", ())),
                reference_kind=raw.get("reference_kind"),
                parent_trial=None if parent_trial is None else as_int(parent_trial),
                parent_value=None if parent_value is None else float(parent_value),
                trial=as_int(raw["trial"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(
                f"malformed {KEY_LINEAGE} system attribute {preview(raw)}: {type(exc).__name__}: {exc}"
            ) from exc

    def to_attr(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "index": self.index,
            "role": self.role,
            "slot": self.slot,
            "references": list(self.references),
            "reference_kind": self.reference_kind,
            "parent_trial": self.parent_trial,
            "parent_value": self.parent_value,
        }


def offspring_info(trial: optuna.trial.BaseTrial | FrozenTrial) -> Lineage | None:
    """The lineage of ``trial`` (role, target slot, parent value) if EvolverSampler drew it.

    The objective uses ``parent_value`` for exact racing: an offspring only has to beat it.
    """
    if isinstance(trial, FrozenTrial):
        attrs = trial.system_attrs
    else:
        attrs = trial.study._storage.get_trial_system_attrs(trial._trial_id)  # type: ignore[attr-defined]
    return Lineage.from_attrs(attrs)


def as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


def preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
