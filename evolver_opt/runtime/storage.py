"""``open_storage(url)``: the one place evolver-opt makes Optuna storages.

Accepted URLs:

* ``None``: ``$EVOLVER_OPT_STORAGE``, else a SQLite file ``runs/evolver.db`` (every command);
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
after the last ``suggest`` (see ``batched_storage.py``). A read of many finished trials (a
resumed process's first) leaves their parameters to be read on first use (``lazy_params.py``).

``$EVOLVER_OPT_STOCK_OPTUNA=1`` (see :func:`stock_optuna`) turns that layer off: RDB URLs give
Optuna's own ``RDBStorage`` (still with the SQLite busy timeout and the heartbeat), and
``run_study`` drives ``study.optimize``.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._rdb import models

from evolver_opt.errors import StateError, StorageError
from evolver_opt.paths import runs_dir
from evolver_opt.runtime.batched_storage import BatchedRDBStorage, flush_params

__all__ = ["BatchedRDBStorage", "default_url", "flush_params", "open_storage", "redact"]

SQLITE_BUSY_TIMEOUT_S = 60
SCHEMA_RACE_ATTEMPTS = 5


def redact(url: str) -> str:
    """``url`` with every password replaced by ``***``, for messages and logs.

    The credentials are everything between ``://`` and the *last* ``@`` of the part before the
    query: SQLAlchemy's ``make_url`` splits ``u:p@ss@host`` at the first ``@`` and would show
    ``ss``. A ``password=`` (or ``sslpassword=``...) query parameter is masked too.
    """
    head, question, query = url.partition("?")
    scheme, sep, rest = head.partition("://")
    if sep and "@" in rest:
        credentials, _, location = rest.rpartition("@")
        user, colon, _password = credentials.partition(":")
        rest = f"{user}{':***' if colon else ''}@{location}"
    if query:
        pairs = (pair.partition("=") for pair in query.split("&"))
        query = "&".join(
            f"{key}={'***' if _SECRET_QUERY.search(key) else value}" if eq else key
            for key, eq, value in pairs
        )
    return f"{scheme}{sep}{rest}{question}{query}"


_SECRET_QUERY = re.compile(r"pass|secret|token", re.IGNORECASE)


def default_url() -> str:
    """The storage of every command without ``--storage``: ``$EVOLVER_OPT_STORAGE``, else the
    SQLite file ``runs/evolver.db``."""
    return os.environ.get("EVOLVER_OPT_STORAGE") or f"sqlite:///{runs_dir() / 'evolver.db'}"


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (None for other storages and in-memory SQLite)."""
    if not url.startswith("sqlite:"):
        return None
    database = sqlalchemy.engine.make_url(url).database
    return (
        Path(database)
        if database and database != ":memory:" and not database.startswith("file:")
        else None
    )


def rdb_engine(storage: BaseStorage) -> sqlalchemy.engine.Engine | None:
    """The SQLAlchemy engine behind an RDB storage (Optuna wraps it in ``_CachedStorage``)."""
    return getattr(getattr(storage, "_backend", storage), "engine", None)


def storage_file(storage: BaseStorage) -> Path | None:
    """The SQLite file an opened storage writes (None for other storages)."""
    engine = rdb_engine(storage)
    return None if engine is None else sqlite_path(engine.url.render_as_string())


def study_names(storage: BaseStorage) -> list[str]:
    return sorted(s.study_name for s in storage.get_all_studies())


def no_such_study(name: str, url: str, storage: BaseStorage) -> str:
    """The message for a study that is not in ``storage``: which storage, and what it holds."""
    names = study_names(storage)
    held = ", ".join(names[:20]) + (f" (and {len(names) - 20} more)" if len(names) > 20 else "")
    return (
        f"no study named {name!r} in storage {redact(url)}; "
        + (f"it holds: {held}" if names else "it holds no studies")
        + " (--storage or $EVOLVER_OPT_STORAGE chooses another)"
    )


STOCK_ENV = "EVOLVER_OPT_STOCK_OPTUNA"


def stock_optuna() -> bool:
    """Whether ``$EVOLVER_OPT_STOCK_OPTUNA`` asks for stock Optuna: its ``RDBStorage`` (no
    batched parameters, no lazy reads) and ``study.optimize`` (no worker loop)."""
    value = os.environ.get(STOCK_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise StorageError(f"${STOCK_ENV}={value!r} is invalid: expected 1/true/yes or 0/false/no")


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
    if not url.startswith("sqlite:") and url.partition("?")[0].count("@") > 1:
        raise StorageError(
            f"storage {redact(url)}: the user name or password holds '@'; percent-encode it "
            "as %40 (e.g. postgresql://user:p%40ss@host/db)"
        )
    batching = {"flush_after": flush_after} if batch_params and not stock_optuna() else None
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
        database = sqlite_path(url)
        if database is not None:
            folder = database.parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(
                    f"cannot create the folder {folder} for storage {redact(url)}: "
                    f"{exc.strerror or exc}; choose another --storage path"
                ) from None
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
        _check_writable(storage, url)
    return storage


def _check_writable(storage: RDBStorage, url: str) -> None:
    """A read-only SQLite file (or folder: WAL needs files beside it) fails here, in one line,
    not at the first trial with Optuna's "exception during the commit"."""
    try:
        with storage.engine.connect() as conn:  # "begin" takes the write lock (BEGIN IMMEDIATE)
            conn.exec_driver_sql("UPDATE version_info SET schema_version = schema_version")
            conn.rollback()
    except sqlalchemy.exc.OperationalError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StorageError(
            f"cannot write to storage {redact(url)}: {reason}. Make the file and its folder "
            "writable (SQLite writes -wal and -shm files beside it), or copy it somewhere "
            "writable"
        ) from None


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


def bad_json_attributes(storage: BaseStorage, study_id: int) -> list[str]:
    """The attributes of a study (and of its trials) whose stored text is not valid JSON, named
    for a message, e.g. ``study system attribute 'evolver:population'``; [] where the storage
    is not an RDB (or every attribute parses)."""
    engine = rdb_engine(storage)
    if engine is None:
        return []
    tables = [
        ("user", models.StudyUserAttributeModel.__table__, False),
        ("system", models.StudySystemAttributeModel.__table__, False),
        ("user", models.TrialUserAttributeModel.__table__, True),
        ("system", models.TrialSystemAttributeModel.__table__, True),
    ]
    trials = models.TrialModel.__table__
    found = []
    with engine.connect() as conn:
        for kind, table, per_trial in tables:
            if per_trial:
                statement = (
                    sqlalchemy.select(trials.c.number, table.c.key, table.c.value_json)
                    .join(trials, trials.c.trial_id == table.c.trial_id)
                    .where(trials.c.study_id == study_id)
                )
            else:
                statement = sqlalchemy.select(
                    sqlalchemy.null(), table.c.key, table.c.value_json
                ).where(table.c.study_id == study_id)
            for number, key, text in conn.execute(statement):
                try:
                    json.loads(text)
                except (TypeError, ValueError):
                    where = f"trial {number}" if per_trial else "study"
                    found.append(f"{where} {kind} attribute {key!r}")
    return found


def describe_bad_json(storage: BaseStorage, study_id: int, exc: BaseException) -> StateError:
    """A :class:`StateError` for a stored attribute that is not JSON, naming it where possible."""
    try:
        names = bad_json_attributes(storage, study_id)
    except sqlalchemy.exc.SQLAlchemyError:
        names = []
    what = ", ".join(names[:5]) if names else "a stored attribute"
    return StateError(
        f"{what} of study {study_id} is not valid JSON ({exc}); the study was changed outside "
        "Optuna and is not read further (nothing is unpickled). Restore the database from a "
        "copy, or delete the attribute"
    )


class DatabaseFileWatch:
    """Notices that a SQLite storage's file was deleted or replaced under a running study.

    SQLite keeps writing into a deleted file's inode through the open connections, so a study
    whose file was removed runs on and everything is gone when the process exits. The watch
    remembers the file's device and inode when made; :meth:`check` raises ``StorageError`` once
    the path no longer names that file. A no-op for other storages."""

    def __init__(self, storage: BaseStorage) -> None:
        self.path = storage_file(storage)
        self._identity = self._stat() if self.path is not None else None

    def _stat(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)  # type: ignore[arg-type]
        except OSError:
            return None
        return stat.st_dev, stat.st_ino

    def check(self) -> None:
        if self.path is None or self._identity is None:
            return
        now = self._stat()
        if now != self._identity:
            what = "deleted" if now is None else "replaced by another file"
            raise StorageError(
                f"the study database {self.path} was {what} while the study ran; nothing more "
                "is written (it would go to the removed file and be lost at exit). Restore the "
                "file from a copy, or start the study again in a new file"
            )
