"""SIGTERM as an exception in the main thread, like KeyboardInterrupt for SIGINT, and blocks
that hold it back until they end (a trial being asked for or told is never cut in half).

A SIGTERM is never raised where an exception would do harm, and never lost:

* **inside the database layer** (SQLAlchemy, the DB-API drivers, Optuna's storages): an
  exception in the middle of a commit can leave a SQLite connection holding its write lock, so
  the trials in flight could not be failed afterwards and would stay RUNNING;
* **inside a finalizer** (``__del__``, a weakref callback): Python ignores an exception there,
  so the signal would be swallowed and the worker would run on.

There the signal is delivered again a moment later (:data:`RETRY_S`), until the main thread is
out of such code. A SIGTERM still held back when :func:`sigterm_raises` ends is raised then.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

RETRY_S = 0.02  # seconds before a SIGTERM held back in unsafe code is delivered again
# modules where an exception must not be raised by a signal (prefixes of __name__)
_UNSAFE_MODULES = ("sqlalchemy", "sqlite3", "psycopg", "psycopg2", "optuna.storages", "weakref")


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM (like KeyboardInterrupt for SIGINT)."""


class _State:
    """The main thread's SIGTERM handling: whether :func:`sigterm_raises` is on, the depth of
    :func:`sigterm_deferred` blocks, and a signal held back (raised when it is safe)."""

    active = False
    depth = 0
    pending: int | None = None


def _terminated(signum: int) -> Terminated:
    return Terminated(f"terminated by signal {signal.Signals(signum).name}")


def in_unsafe_code(frame: FrameType | None) -> bool:
    """Whether ``frame`` or a caller of it runs in the database layer or in a finalizer."""
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if frame.f_code.co_name == "__del__" or module.startswith(_UNSAFE_MODULES):
            return True
        frame = frame.f_back
    return False


def _deliver_again(signum: int) -> None:
    if _State.active and _State.pending == signum:
        os.kill(os.getpid(), signum)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _State.depth:
        _State.pending = signum  # raised when the last deferred block ends
        return
    if in_unsafe_code(frame):
        _State.pending = signum
        timer = threading.Timer(RETRY_S, _deliver_again, (signum,))
        timer.daemon = True
        timer.start()
        return
    _State.pending = None
    raise _terminated(signum)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While active (main thread only), SIGTERM raises :class:`Terminated`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    _State.active = True
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _State.active = False
        held, _State.pending = _State.pending, None
    if held is not None:  # arrived in unsafe code just before the block ended
        raise _terminated(held)


@contextmanager
def sigterm_deferred() -> Iterator[None]:
    """A SIGTERM inside the block raises when the block ends, not in its middle: a trial the
    storage created is registered in flight (so it is failed, not left RUNNING), and a value
    being told is stored. Main thread only; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
    if _State.depth == 0 and _State.pending is not None:
        signum, _State.pending = _State.pending, None
        raise _terminated(signum)
