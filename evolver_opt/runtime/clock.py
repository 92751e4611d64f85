"""Durations as a person reads them, for the estimates commands print."""

from __future__ import annotations


def about(seconds: float) -> str:
    """``about 40 s``, ``about 7 min`` or ``about 1 h 05 min``."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60:02d} min"
