"""Peak resident memory (RSS) of a block of work, kept on the study (compare rows, runs).

``tracemalloc`` sees Python allocations only, not torch's tensors, so it is the wrong tool.
On Linux the kernel's high-water mark ``VmHWM`` (``/proc/self/status``) is exact, and writing
``5`` to ``/proc/self/clear_refs`` resets it, so each study gets its own peak. Elsewhere (or
when the reset is refused) the process-wide ``ru_maxrss`` is reported and marked as such.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any, Self

ATTR_PEAK_RSS = "peak_rss_mb"  # study user attribute: {"mib": float, "scope": str}
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _vm_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _maxrss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


class PeakRSS:
    """``with PeakRSS() as peak: ...`` then ``peak.mib`` (and ``peak.scope``).

    ``scope`` is ``"block"`` when the peak is this block's own (the high-water mark was reset on
    entry), ``"process"`` when it is the process's peak so far.
    """

    def __init__(self) -> None:
        self.mib: float | None = None
        self.scope = "process"

    def __enter__(self) -> Self:
        try:
            _CLEAR_REFS.write_text("5")
            self.scope = "block" if _vm_kib("VmHWM") is not None else "process"
        except OSError:
            self.scope = "process"
        return self

    def __exit__(self, *exc: object) -> None:
        hwm = _vm_kib("VmHWM") if self.scope == "block" else None
        self.mib = round(hwm / 1024, 1) if hwm is not None else round(_maxrss_mib(), 1)


def record_peak(study: Any, peak: PeakRSS) -> float | None:
    """The study's peak RSS: this run's, or an earlier run's (or another worker's) if higher,
    kept in the study user attribute ``peak_rss_mb`` (a resume that found the study finished
    measures almost nothing)."""
    stored = stored_peak(study)
    if stored is not None and (peak.mib is None or stored >= peak.mib):
        return stored
    study.set_user_attr(ATTR_PEAK_RSS, {"mib": peak.mib, "scope": peak.scope})
    return peak.mib


def stored_peak(study: Any) -> float | None:
    """The peak recorded on ``study`` (MiB), or None: none recorded, or a value of another
    shape (``{"mib": "lots"}``), which is ignored with a warning and replaced by this run's."""
    import math
    import warnings

    stored = study.user_attrs.get(ATTR_PEAK_RSS)
    if stored is None:
        return None
    mib = stored.get("mib") if isinstance(stored, dict) else None
    if mib is None and isinstance(stored, dict) and set(stored) <= {"mib", "scope"}:
        return None  # a run that measured nothing
    if (
        isinstance(mib, bool)
        or not isinstance(mib, (int, float))
        or not math.isfinite(mib)
        or mib < 0
    ):
        warnings.warn(
            f"study {study.study_name!r}: user attribute {ATTR_PEAK_RSS} = {str(stored)[:80]!r} "
            'is not {"mib": a non-negative number, "scope": ...}; ignored and replaced',
            UserWarning,
            stacklevel=3,
        )
        return None
    return float(mib)
