"""``open_storage(url)``: the one place evolver-opt makes Optuna storages.

Accepted URLs:

* ``None``: a SQLite file ``runs/evolver.db``;
* ``sqlite:///PATH``: SQLite in WAL mode with a busy timeout, so several processes can share it;
* ``postgresql://...`` (``psycopg`` is used when no driver is named), ``mysql://...``: any
  SQLAlchemy URL Optuna's ``RDBStorage`` accepts;
* ``journal:PATH`` or a path ending in ``.log``: Optuna's ``JournalStorage`` on a file (a torn
  last line, left by a writer killed mid-append, is cut off with a warning; its bytes are kept
  in ``PATH.torn``);
* ``memory``: an in-memory storage (tests, quick experiments).

RDB storages get a heartbeat and ``RetryHeartbeatStaleTrialCallback``: the trial of a killed
worker is failed after the grace period and re-queued with the same parameters. They are
:class:`BatchedRDBStorage` (a standard ``RDBStorage``): a trial's parameters are written in one
transaction, before the trial's next write, on :func:`flush_params`, or ``flush_after`` seconds
after the last ``suggest`` (see ``_batched_storage.py``). A read of many finished trials (a
resumed process's first) leaves their parameters to be read on first use (``_lazy_params.py``).
"""

from __future__ import annotations

import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback

from evolver_opt.errors import StorageError
from evolver_opt.integrations._batched_storage import BatchedRDBStorage, flush_params
from evolver_opt.paths import runs_dir

__all__ = ["BatchedRDBStorage", "default_url", "flush_params", "open_storage", "redact"]

SQLITE_BUSY_TIMEOUT_S = 60
SCHEMA_RACE_ATTEMPTS = 5


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def default_url() -> str:
    return f"sqlite:///{runs_dir() / 'evolver.db'}"


def open_storage(
    url: str | None = None,
    *,
    heartbeat_interval: int | None = 10,
    grace_period: int | None = None,
    max_retry: int | None = 3,
    batch_params: bool = True,
    flush_after: float | None = 0.1,
) -> BaseStorage:
    """Open (creating if needed) the storage at ``url``; see the module docstring for URLs.

    ``heartbeat_interval=None`` turns the heartbeat (and retry of stale trials) off.
    ``batch_params=False`` gives the stock ``RDBStorage`` (one transaction per parameter);
    ``flush_after`` is :class:`BatchedRDBStorage`'s idle delay before buffered parameters are
    written without an explicit :func:`flush_params`.
    """
    url = url or default_url()
    if url == "memory":
        return optuna.storages.InMemoryStorage()
    if url.startswith("journal:") or url.endswith(".log"):
        return _journal(url.removeprefix("journal:"))
    if "://" not in url:
        raise StorageError(
            f"storage {url!r} is not a URL; expected e.g. 'sqlite:///runs/study.db', "
            "'postgresql://user@host/db', 'journal:path.log' or 'memory'"
        )
    batching = {"flush_after": flush_after} if batch_params else None
    return _rdb(url, heartbeat_interval, grace_period, max_retry, batching)


def _journal(path: str) -> BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    lock = JournalFileSymlinkLock(path)  # the lock every writer takes to append
    if Path(path).is_file():
        lock.acquire()  # no writer is mid-line while we hold it: a torn tail is really torn
        try:
            _repair_torn_tail(Path(path))
        finally:
            lock.release()
    return JournalStorage(JournalFileBackend(path, lock_obj=lock))


def _repair_torn_tail(path: Path) -> None:
    """Cut a torn last line (no final newline, or not JSON) off the journal at ``path``.

    A writer killed mid-append leaves one; Optuna 5.0 skips it on read but the next append
    glues a new operation onto it, so that operation is lost and the study breaks (``ask``
    raises AttributeError). The torn bytes are kept in ``<path>.torn`` and a warning says so.
    """
    import json
    import logging

    with path.open("rb+") as f:
        size = f.seek(0, 2)
        if size == 0:
            return
        end = size - 1 if _byte_at(f, size - 1) == b"\n" else size  # the last line's end
        start = end
        while start > 0:  # back to the newline before the last line
            chunk_start = max(0, start - 65536)
            f.seek(chunk_start)
            found = f.read(start - chunk_start).rfind(b"\n")
            if found >= 0:
                start = chunk_start + found + 1
                break
            start = chunk_start
        f.seek(start)
        tail = f.read()
        if tail.endswith(b"\n"):
            try:
                json.loads(tail)
                return
            except ValueError:
                pass
        backup = path.with_name(path.name + ".torn")
        n = 1
        while backup.exists():
            backup, n = path.with_name(f"{path.name}.torn.{n}"), n + 1
        backup.write_bytes(tail)
        logging.getLogger(__name__).warning(
            "journal %s ends with a torn line (%d bytes, %s); it is cut off (a copy is in %s) "
            "and the journal is used up to the last complete operation",
            path,
            len(tail),
            "no final newline" if not tail.endswith(b"\n") else "not valid JSON",
            backup,
        )
        f.truncate(start)
        f.flush()
        os.fsync(f.fileno())


def _byte_at(f: Any, offset: int) -> bytes:
    f.seek(offset)
    return f.read(1)


def _rdb(
    url: str,
    heartbeat_interval: int | None,
    grace_period: int | None,
    max_retry: int | None,
    batching: dict[str, Any] | None = None,
) -> RDBStorage:
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        database = sqlalchemy.engine.make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    elif url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("postgresql"):
        engine_kwargs["pool_pre_ping"] = True
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        with warnings.catch_warnings():  # heartbeat and retry are "experimental" since Optuna 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = (
                RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
                if heartbeat_interval
                else None
            )
            cls: Any = RDBStorage if batching is None else BatchedRDBStorage
            for attempt in range(SCHEMA_RACE_ATTEMPTS):
                try:
                    storage = cls(
                        url,
                        **(batching or {}),
                        engine_kwargs=engine_kwargs,
                        heartbeat_interval=heartbeat_interval,
                        grace_period=grace_period,
                        heartbeat_stale_trial_callback=retry,
                    )
                    break
                except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                    # Workers started together on an empty database: another one is creating
                    # the schema right now (duplicate table or type). Wait, then use its schema.
                    if attempt == SCHEMA_RACE_ATTEMPTS - 1:
                        raise
                    time.sleep(0.5 * (attempt + 1))
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ArgumentError, ImportError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StorageError(f"cannot open storage {redact(url)}: {reason}") from None
    except RuntimeError as exc:  # Optuna refuses a schema from another version
        raise StorageError(f"cannot use storage {redact(url)}: {exc}") from None
    if url.startswith("sqlite:"):
        _tune_sqlite(storage)
    return storage


def _tune_sqlite(storage: RDBStorage) -> None:
    """WAL (readers run beside a writer), NORMAL sync (durable across process crashes), and
    ``BEGIN IMMEDIATE`` transactions.

    pysqlite runs a SELECT outside any transaction and begins one only at the first write, so
    Optuna's read-check-write steps (e.g. popping an enqueued trial) race: two threads or
    processes can both take the same WAITING trial, and one crashes with
    ``UpdateFinishedTrialError``. Taking the write lock at BEGIN makes each step atomic.
    """

    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @sqlalchemy.event.listens_for(storage.engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    storage.engine.dispose()  # reconnect so that every pooled connection is tuned
