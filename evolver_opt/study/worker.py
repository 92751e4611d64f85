"""The worker loop of a merge search: ask, evaluate, tell, with the faults of shared machines
handled so that no computed value and no finished trial is lost.

``study.optimize`` is replaced by this loop because Optuna 5.0 crashes the worker, and drops
the value it computed, when another process failed the worker's trial in the meantime (the
heartbeat of a paused worker went stale): ``tell`` raises ``ValueError: Cannot tell a FAIL
trial``. Here, what each fault does:

* **Trial taken over.** The objective's value is *rescued*: if the heartbeat callback re-queued
  the trial (a WAITING retry with the same parameters and lineage), the worker claims that
  retry and completes it with the value (no second evaluation); otherwise it adds a COMPLETE
  copy of the trial (same parameters, lineage and user attributes, plus
  ``evolver_opt:rescued_from``). Either way the value is in the storage and EvolverSampler's
  population uses it (an individual is the best finished trial of its slot).
  User attributes the objective sets after the takeover are kept and copied the same way.
* **SIGTERM / Ctrl-C.** The trials in flight are failed at once (``fail_reason``) and re-queued
  with the same parameters, as a stale trial would be; nothing stays RUNNING. A SIGTERM that
  arrives while a trial is being asked for or told waits for that call to end, so a trial just
  created is failed too and a value being stored is kept.
* **Database hiccup.** Storage calls of the loop are retried with backoff for
  ``storage_retry_s`` seconds, then a :class:`StorageError` names the URL (no password). A
  trial left RUNNING then is failed by the heartbeat and retried by the next worker.
* **Disk full** (or a file-size limit, or a failing disk): a write the database refuses stops
  the loop at once with a :class:`StorageError` saying so (free space beside a SQLite file,
  the process's file-size limit); committed trials are untouched and the next run resumes.
* **Every trial fails.** After ``max_consecutive_failures`` FAIL trials in a row the loop stops
  with a :class:`ConfigError`.

Budget: the loop stops when the study holds ``n_trials`` trials that count. A retry replaces
the trial it retries (they count once), so re-queued trials always run. Several processes on one
study each check the count before asking; together they may overshoot by up to one trial per
process.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import optuna
import sqlalchemy
from optuna.exceptions import StorageInternalError, TrialPruned, UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from evolver_opt.errors import ConfigError, StateError, StorageError
from evolver_opt.integrations.storage import DatabaseFileWatch, describe_bad_json, storage_file

_logger = logging.getLogger(__name__)

KEY_RESCUED = "evolver_opt:rescued_from"
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


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


class _GuardedTrial(optuna.Trial):
    """A trial whose ``set_user_attr`` survives a takeover: after another process finished the
    trial, attributes are kept in memory and copied to the trial that receives the value."""

    _orphan_attrs: dict[str, Any]

    def set_user_attr(self, key: str, value: Any) -> None:
        try:
            super().set_user_attr(key, value)
        except UpdateFinishedTrialError:
            self._orphan_attrs[key] = value


@contextmanager
def _heartbeat(storage: Any, trial_id: int, number: int) -> Iterator[None]:
    """Record the trial's heartbeat every interval while the body runs (RDB storages).

    Unlike Optuna's heartbeat thread, which dies with a traceback at the first database error
    (so the trial looks stale and another worker retries it while it still runs), this one logs
    one line and keeps trying at each beat: a short database outage costs nothing.
    """
    from optuna.storages._heartbeat import is_heartbeat_enabled

    if not is_heartbeat_enabled(storage):
        yield
        return
    interval = storage.get_heartbeat_interval()
    stop = threading.Event()

    def beat() -> None:
        failing = False
        while True:
            try:
                storage.record_heartbeat(trial_id)
                if failing:
                    _logger.warning("trial %d: heartbeat written again", number)
                failing = False
            except Exception as exc:  # noqa: BLE001 - never die: the next beat tries again
                if not failing:
                    _logger.warning(
                        "trial %d: heartbeat not written (%s); retrying", number, _reason(exc)
                    )
                failing = True
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, daemon=True, name=f"evolver-heartbeat-{number}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _guard(trial: optuna.Trial) -> _GuardedTrial:
    trial.__class__ = _GuardedTrial  # same object, same state: only set_user_attr differs
    trial._orphan_attrs = {}  # type: ignore[attr-defined]
    return trial  # type: ignore[return-value]


@dataclass
class WorkerLoop:
    """Runs ``objective`` on ``study`` in ``n_jobs`` threads until the budget is reached."""

    study: optuna.Study
    objective: Callable[[optuna.Trial], float]
    n_trials: int
    n_jobs: int = 1
    catch: tuple[type[Exception], ...] = (Exception,)
    max_consecutive_failures: int = 10
    storage_retry_s: float = 60.0
    url: str = ""  # for messages, without its password
    on_trial: Callable[[FrozenTrial], None] | None = None
    ran: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _in_flight: dict[int, optuna.Trial] = field(default_factory=dict)
    _abandoned: set[int] = field(default_factory=set)
    _failures: int = 0
    _error: BaseException | None = None
    _file: DatabaseFileWatch = field(init=False)

    def __post_init__(self) -> None:
        self._file = DatabaseFileWatch(self.study._storage)

    def run(self) -> int:
        """Run to the budget; returns how many trials this call finished."""
        # We do run the heartbeat (around the objective), as Study.optimize would.
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed", UserWarning)
        with sigterm_raises():
            try:
                if self.n_jobs == 1:
                    self._thread_main()
                else:
                    self._run_threads()
            except BaseException as exc:  # SIGTERM, Ctrl-C, or a worker's error
                self._stop.set()
                with sigterm_deferred():
                    self._abandon_in_flight(exc)
                raise
        if self._error is not None:
            raise self._error
        return self.ran

    def _run_threads(self) -> None:
        threads = [
            threading.Thread(target=self._thread_main, daemon=True, name=f"evolver-worker-{i}")
            for i in range(self.n_jobs)
        ]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():  # join with a timeout, so that signals reach the main thread
                t.join(timeout=0.2)

    def _thread_main(self) -> None:
        try:
            while not self._stop.is_set():
                trial = self._next_trial()
                if trial is None:
                    return
                self._evaluate(trial)
        except BaseException as exc:
            self._stop.set()
            if threading.current_thread() is threading.main_thread():
                raise
            with self._lock:
                self._error = self._error or exc

    # ------------------------------------------------------------------ ask
    def _next_trial(self) -> optuna.Trial | None:
        # count and ask together: threads of one process never overshoot
        with self._lock, sigterm_deferred():
            self._file.check()  # the SQLite file deleted or replaced: stop here
            if self._stop.is_set() or self._counted() >= self.n_trials:
                return None
            self._storage_call("fail stale trials", self._fail_stale)
            trial = self._storage_call("ask for a trial", self.study.ask)
            self._in_flight[trial._trial_id] = trial
            return trial

    def _counted(self) -> int:
        trials = self._storage_call(
            "read the trials",
            lambda: self.study._storage.get_all_trials(self.study._study_id, deepcopy=False),
        )
        counted = sum(t.state in COUNTED for t in trials)
        replacing = sum(1 for t in trials if "failed_trial" in t.system_attrs)
        return counted - replacing

    def _fail_stale(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)

    # ------------------------------------------------------------- evaluate
    def _evaluate(self, trial: optuna.Trial) -> None:
        guarded = _guard(trial)
        value: float | None = None
        state: TrialState | None = None
        reason = ""
        requeue = False
        with _heartbeat(self.study._storage, trial._trial_id, trial.number):
            try:
                value = self.objective(guarded)
                if not _is_number(value):  # NaN: Optuna would fail it without a reason
                    state, reason = TrialState.FAIL, f"the objective returned {value!r}"
                    value = None
                    _logger.warning("trial %d failed: %s", trial.number, reason)
            except TrialPruned:
                state = TrialState.PRUNED
            except UpdateFinishedTrialError:
                state, reason = TrialState.FAIL, "taken over before it set its parameters"
            except (StateError, StorageError):
                raise  # tampered sampler state, lost database: stop with the clear message
            except json.JSONDecodeError as exc:  # the sampler read a tampered attribute
                raise self._bad_json(exc) from None
            except (StorageInternalError, sqlalchemy.exc.OperationalError) as exc:
                # The database failed under the objective (e.g. while it stored a parameter):
                # the trial is failed and re-queued once the storage answers again.
                state, reason = TrialState.FAIL, f"storage error during the trial: {_reason(exc)}"
                requeue = True
                _logger.warning("trial %d: %s", trial.number, reason)
            except self.catch as exc:
                state, reason = TrialState.FAIL, f"{type(exc).__name__}: {exc}"
                _logger.warning("trial %d failed: %s", trial.number, reason)
        with sigterm_deferred():  # the value is told (and the trial leaves in-flight) in full
            frozen = self._finish(guarded, value, state, reason)
            if requeue and frozen is not None and frozen.state == TrialState.FAIL:
                self._storage_call("re-queue the trial", lambda: self._requeue(frozen))
                frozen = None  # not a failure of the objective: the failure count is left as is
            with self._lock:
                self._in_flight.pop(trial._trial_id, None)
                self.ran += 1
        if frozen is not None:
            self._count_failures(frozen)
            if self.on_trial is not None:
                self.on_trial(frozen)

    def _finish(
        self, trial: _GuardedTrial, value: float | None, state: TrialState | None, reason: str
    ) -> FrozenTrial | None:
        """Tell the result; rescue it if another process finished the trial meanwhile."""
        storage = self.study._storage
        if trial._trial_id in self._abandoned:  # failed by this process on SIGTERM
            return None
        current = self._storage_call("read the trial", lambda: storage.get_trial(trial._trial_id))
        if current.state == TrialState.RUNNING:
            try:
                if reason:
                    self._storage_call(
                        "record why the trial failed",
                        lambda: storage.set_trial_system_attr(
                            trial._trial_id, "fail_reason", reason
                        ),
                    )
                self._storage_call(
                    "tell the result",
                    lambda: self.study.tell(trial, value, state=state, skip_if_finished=True),
                )
                return self._storage_call(
                    "read the trial", lambda: storage.get_trial(trial._trial_id)
                )
            except UpdateFinishedTrialError:
                current = storage.get_trial(trial._trial_id)
        if current.state == TrialState.RUNNING or value is None or state is not None:
            return None  # nothing computed to keep (the retry, if any, evaluates again)
        return self._storage_call("rescue the result", lambda: self._rescue(current, value, trial))

    def _requeue(self, failed: FrozenTrial) -> None:
        """Re-queue ``failed`` with the same parameters, as the heartbeat's retry would."""
        retry = getattr(self.study._storage, "get_heartbeat_stale_trial_callback", lambda: None)()
        if retry is not None:
            retry(self.study, failed)

    def _rescue(self, lost: FrozenTrial, value: float, trial: _GuardedTrial) -> FrozenTrial:
        """Keep ``value`` of ``lost`` (finished by another process) durably in the storage."""
        study, storage = self.study, self.study._storage
        attrs = {**lost.user_attrs, **trial._orphan_attrs, KEY_RESCUED: lost.number}
        for t in storage.get_all_trials(study._study_id, deepcopy=False):
            if (
                t.state == TrialState.WAITING
                and lost.number in t.system_attrs.get("retry_history", ())
                and t.params == lost.params
                and storage.set_trial_state_values(t._trial_id, TrialState.RUNNING)
            ):
                for key, v in attrs.items():
                    storage.set_trial_user_attr(t._trial_id, key, v)
                study.tell(t.number, value)
                _logger.warning(
                    "trial %d was failed by another process while it ran; its value %r completes "
                    "its retry, trial %d",
                    lost.number,
                    value,
                    t.number,
                )
                return storage.get_trial(t._trial_id)
        system_attrs = {k: v for k, v in lost.system_attrs.items() if k != "fixed_params"}
        system_attrs.setdefault("failed_trial", lost.number)
        template = optuna.create_trial(
            params=lost.params,
            distributions=lost.distributions,
            value=value,
            user_attrs=attrs,
            system_attrs=system_attrs,
        )
        copy = storage.get_trial(storage.create_new_trial(study._study_id, template_trial=template))
        _logger.warning(
            "trial %d was failed by another process while it ran; its value %r is kept as trial %d",
            lost.number,
            value,
            copy.number,
        )
        return copy

    def _count_failures(self, frozen: FrozenTrial) -> None:
        with self._lock:
            if frozen.state != TrialState.FAIL:
                self._failures = 0
                return
            self._failures += 1
            if self._failures < self.max_consecutive_failures:
                return
            self._stop.set()
        reason = frozen.system_attrs.get("fail_reason", "no reason was recorded")
        raise ConfigError(
            f"{self._failures} trials failed in a row (last: trial {frozen.number}: {reason}); "
            "stopping. See the trials' fail_reason in the storage."
        )

    # ------------------------------------------------------------ abandon
    def _abandon_in_flight(self, exc: BaseException) -> None:
        """Fail the trials this process is running (and re-queue them), so none stays RUNNING."""
        reason = f"worker stopped: {type(exc).__name__}: {exc}".strip().rstrip(":")
        with self._lock:
            in_flight = list(self._in_flight.values())
            self._in_flight.clear()
            self._abandoned.update(t._trial_id for t in in_flight)
        for trial in in_flight:
            try:  # a lock held a moment (SQLite) is waited out, briefly: the worker is stopping
                self._storage_call(
                    f"fail trial {trial.number}",
                    lambda t=trial: self._fail_and_requeue(t, reason),
                    retry_s=_ABANDON_RETRY_S,
                )
            except UpdateFinishedTrialError:
                pass  # told before the stop: its value is kept
            except StorageError as err:
                _logger.warning("could not fail trial %d: %s", trial.number, err)

    def _fail_and_requeue(self, trial: optuna.Trial, reason: str) -> None:
        storage = self.study._storage
        storage.set_trial_system_attr(trial._trial_id, "fail_reason", reason)
        if storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            self._requeue(storage.get_trial(trial._trial_id))

    # ------------------------------------------------------------- storage
    def _bad_json(self, exc: json.JSONDecodeError) -> StateError:
        error = describe_bad_json(self.study._storage, self.study._study_id, exc)
        return StateError(f"{self._where}: {error}")

    @property
    def _where(self) -> str:
        return f"storage {self.url}" if self.url else "the storage"

    def _space_note(self) -> str:
        """Free space beside a SQLite file, and this process's file-size limit if it has one."""
        import resource
        import shutil

        notes = []
        database = storage_file(self.study._storage)
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

    def _storage_call(
        self, what: str, call: Callable[[], Any], retry_s: float | None = None
    ) -> Any:
        """``call()``, retried with backoff while the database is unreachable, for ``retry_s``
        seconds (default: ``storage_retry_s``)."""
        retry_s = self.storage_retry_s if retry_s is None else retry_s
        deadline = time.monotonic() + retry_s
        delay = 0.5
        while True:
            try:
                return call()
            except json.JSONDecodeError as exc:
                raise self._bad_json(exc) from None
            except (StorageInternalError, sqlalchemy.exc.OperationalError) as exc:
                reason = _reason(exc)
                if _is_write_failure(reason):  # disk full: waiting seldom helps; say so now
                    raise StorageError(
                        f"{self._where}: could not {what}: {reason}. The disk is full, a file "
                        f"size limit was reached or the disk failed{self._space_note()}. "
                        "Finished trials are kept; free space and run the same command again "
                        "to resume."
                    ) from None
                if time.monotonic() + delay > deadline:
                    raise StorageError(
                        f"{self._where} was unreachable for {retry_s:g} s "
                        f"(could not {what}): {reason}. Finished trials are kept; run the same "
                        "command again to resume."
                    ) from None
                _logger.warning("%s: could not %s (%s); retrying", self._where, what, reason)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


_ABANDON_RETRY_S = 3.0  # per trial in flight when the worker stops

_WRITE_FAILURES = (
    "disk is full",  # SQLite SQLITE_FULL
    "disk i/o error",  # SQLite SQLITE_IOERR (EFBIG past a file-size limit, EIO)
    "no space left",  # ENOSPC, PostgreSQL "could not extend file ...: No space left on device"
    "file too large",  # EFBIG
    "could not extend file",
)


def _is_number(value: Any) -> bool:
    """A value Optuna completes a trial with: a float that is not NaN (inf is kept)."""
    try:
        return not math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def _is_write_failure(reason: str) -> bool:
    """Whether a database error means the data could not be written (disk full, size limit)."""
    lowered = reason.lower()
    return any(words in lowered for words in _WRITE_FAILURES)


def _reason(exc: BaseException) -> str:
    """The first line of what the database said (the driver's error under SQLAlchemy's)."""
    cause = exc.__cause__ or exc
    lines = str(getattr(cause, "orig", None) or cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__
