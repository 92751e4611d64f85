"""Storage calls of the worker loop, guarded: retried with backoff while the database is
unreachable, stopped at once with a clear :class:`StorageError` when a write is refused (disk
full, file-size limit, failing disk), and a tampered JSON attribute named as a
:class:`StateError`."""

from __future__ import annotations

import json
import logging
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy
from optuna.exceptions import StorageInternalError
from optuna.storages import BaseStorage

from evolver_opt.errors import StateError, StorageError
from evolver_opt.runtime.storage import describe_bad_json, storage_file

_logger = logging.getLogger(__name__)

DATABASE_ERRORS = (StorageInternalError, sqlalchemy.exc.OperationalError)
"""What a storage call raises when the database failed under it (retried, or a write failure)."""

_WRITE_FAILURES = (
    "disk is full",  # SQLite SQLITE_FULL
    "disk i/o error",  # SQLite SQLITE_IOERR (EFBIG past a file-size limit, EIO)
    "no space left",  # ENOSPC, PostgreSQL "could not extend file ...: No space left on device"
    "file too large",  # EFBIG
    "could not extend file",
)


def database_reason(exc: BaseException) -> str:
    """The first line of what the database said (the driver's error under SQLAlchemy's)."""
    cause = exc.__cause__ or exc
    lines = str(getattr(cause, "orig", None) or cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__


def is_write_failure(reason: str) -> bool:
    """Whether a database error means the data could not be written (disk full, size limit)."""
    lowered = reason.lower()
    return any(words in lowered for words in _WRITE_FAILURES)


@dataclass(frozen=True)
class StorageGuard:
    """Runs the storage calls of one study (``guard.call("ask for a trial", study.ask)``);
    ``url`` (without its password) names the storage in messages."""

    storage: BaseStorage
    study_id: int
    retry_s: float = 60.0
    url: str = ""

    @property
    def where(self) -> str:
        """The storage as messages name it."""
        return f"storage {self.url}" if self.url else "the storage"

    def bad_json(self, exc: json.JSONDecodeError) -> StateError:
        """The error for an attribute the sampler could not parse, naming where it is."""
        error = describe_bad_json(self.storage, self.study_id, exc)
        return StateError(f"{self.where}: {error}")

    def space_note(self) -> str:
        """Free space beside a SQLite file, and this process's file-size limit if it has one."""
        notes = []
        database = storage_file(self.storage)
        if database is not None:
            folder = database.resolve().parent
            try:
                notes.append(f"{shutil.disk_usage(folder).free:,} bytes free in {folder}")
            except OSError:
                pass
        soft, _hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft != resource.RLIM_INFINITY:
            notes.append(f"file size limit (ulimit -f) {soft:,} bytes")
        return f" ({'; '.join(notes)})" if notes else ""

    def call(self, what: str, call: Callable[[], Any], retry_s: float | None = None) -> Any:
        """``call()``, retried with backoff while the database is unreachable, for ``retry_s``
        seconds (default: the guard's ``retry_s``); ``what`` says what it does in messages."""
        retry_s = self.retry_s if retry_s is None else retry_s
        deadline = time.monotonic() + retry_s
        delay = 0.5
        while True:
            try:
                return call()
            except json.JSONDecodeError as exc:
                raise self.bad_json(exc) from None
            except DATABASE_ERRORS as exc:
                reason = database_reason(exc)
                if is_write_failure(reason):  # disk full: waiting seldom helps; say so now
                    raise StorageError(
                        f"{self.where}: could not {what}: {reason}. The disk is full, a file "
                        f"size limit was reached or the disk failed{self.space_note()}. "
                        "Finished trials are kept; free space and run the same command again "
                        "to resume."
                    ) from None
                if time.monotonic() + delay > deadline:
                    raise StorageError(
                        f"{self.where} was unreachable for {retry_s:g} s "
                        f"(could not {what}): {reason}. Finished trials are kept; run the same "
                        "command again to resume."
                    ) from None
                _logger.warning("%s: could not %s (%s); retrying", self.where, what, reason)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
