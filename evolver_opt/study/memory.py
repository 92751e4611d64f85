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
    stored = study.user_attrs.get(ATTR_PEAK_RSS) or {}
    if stored.get("mib") is not None and (peak.mib is None or stored["mib"] >= peak.mib):
        return stored["mib"]
    study.set_user_attr(ATTR_PEAK_RSS, {"mib": peak.mib, "scope": peak.scope})
    return peak.mib
