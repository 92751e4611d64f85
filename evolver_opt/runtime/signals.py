"""SIGTERM as an exception in the main thread, like KeyboardInterrupt for SIGINT, and blocks
that hold it back until they end (a trial being asked for or told is never cut in half)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM (like KeyboardInterrupt for SIGINT)."""


class _Deferral:
    """SIGTERM received inside :func:`sigterm_deferred` blocks, raised when the last one ends."""

    depth = 0
    pending: int | None = None


def _terminated(signum: int) -> Terminated:
    return Terminated(f"terminated by signal {signal.Signals(signum).name}")


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While active (main thread only), SIGTERM raises :class:`Terminated`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, _frame: Any) -> None:
        if _Deferral.depth:
            _Deferral.pending = signum
            return
        raise _terminated(signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _Deferral.pending = None


@contextmanager
def sigterm_deferred() -> Iterator[None]:
    """A SIGTERM inside the block raises when the block ends, not in its middle: a trial the
    storage created is registered in flight (so it is failed, not left RUNNING), and a value
    being told is stored. Main thread only; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _Deferral.depth += 1
    try:
        yield
    finally:
        _Deferral.depth -= 1
    if _Deferral.depth == 0 and _Deferral.pending is not None:
        signum, _Deferral.pending = _Deferral.pending, None
        raise _terminated(signum)
