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
* **A worker killed (SIGKILL) mid-trial.** Its trial stays RUNNING. The next worker on the
  same machine fails it and re-queues it at once (the trial records its worker's process,
  :mod:`evolver_opt.runtime.owner`); a worker elsewhere does so once the heartbeat has been
  silent for the grace period. Either way this happens before the budget is counted, so a
  dead worker's trial never counts as done.
* **Every trial fails.** After ``max_consecutive_failures`` FAIL trials in a row the loop stops
  with a :class:`ConfigError`.

Budget: the loop stops when the study holds ``n_trials`` trials that count. A retry replaces
the trial it retries (they count once), so re-queued trials always run. Several processes on one
study each check the count before asking; together they may overshoot by up to one trial per
process.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from evolver_opt.errors import ConfigError
from evolver_opt.runtime.heartbeat import guard_trial, heartbeat
from evolver_opt.runtime.outcome import run_objective
from evolver_opt.runtime.owner import ATTR_OWNER, orphaned_trials, owner_record
from evolver_opt.runtime.requeue import abandon, fail_and_requeue, requeue
from evolver_opt.runtime.rescue import tell_or_rescue
from evolver_opt.runtime.signals import sigterm_deferred, sigterm_raises
from evolver_opt.runtime.storage import DatabaseFileWatch
from evolver_opt.runtime.storage_guard import StorageGuard

_logger = logging.getLogger(__name__)
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


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
    # RUNNING trials of other workers when the budget was last counted (they count toward it)
    others_running: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _in_flight: dict[int, optuna.Trial] = field(default_factory=dict)
    _abandoned: set[int] = field(default_factory=set)
    _failures: int = 0
    _error: BaseException | None = None
    _file: DatabaseFileWatch = field(init=False)
    _guard: StorageGuard = field(init=False)

    def __post_init__(self) -> None:
        self._file = DatabaseFileWatch(self.study._storage)
        self._guard = StorageGuard(
            self.study._storage, self.study._study_id, retry_s=self.storage_retry_s, url=self.url
        )

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
        self._say_what_to_wait_for()
        return self.ran

    def _say_what_to_wait_for(self) -> None:
        """Name the RUNNING trials of other workers that the budget counted (a live worker's,
        or one elsewhere that died and whose heartbeat grace period has not run out yet)."""
        if not self.others_running or self._stop.is_set():
            return
        interval = getattr(self.study._storage, "get_heartbeat_interval", lambda: None)()
        grace = (
            f"its heartbeat has been silent for {2 * interval} s (twice --heartbeat)"
            if interval
            else "its worker stops"
        )
        _logger.warning(
            "the budget of %d trials counts trial(s) %s, RUNNING in other workers; if such a "
            "worker died, its trial is failed and retried by the next run once %s",
            self.n_trials,
            ", ".join(map(str, self.others_running)),
            grace,
        )

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

    def _next_trial(self) -> optuna.Trial | None:
        # count and ask together: threads of one process never overshoot
        with self._lock, sigterm_deferred():
            self._file.check()  # the SQLite file deleted or replaced: stop here
            if self._stop.is_set():
                return None
            # before counting: a trial whose worker is gone is failed and re-queued, never
            # counted as done (its retry counts in its place)
            self._guard.call("fail stale trials", self._fail_stale)
            if self._counted() >= self.n_trials:
                return None
            trial = self._guard.call("ask for a trial", self.study.ask)
            self._in_flight[trial._trial_id] = trial
            self._guard.call(
                "record the trial's worker",
                lambda: self.study._storage.set_trial_system_attr(
                    trial._trial_id, ATTR_OWNER, owner_record(trial.number)
                ),
            )
            return trial

    def _counted(self) -> int:
        trials = self._guard.call(
            "read the trials",
            lambda: self.study._storage.get_all_trials(self.study._study_id, deepcopy=False),
        )
        counted = sum(t.state in COUNTED for t in trials)
        replacing = sum(1 for t in trials if "failed_trial" in t.system_attrs)
        ours = {t.number for t in self._in_flight.values()}
        self.others_running = [
            t.number for t in trials if t.state == TrialState.RUNNING and t.number not in ours
        ]
        return counted - replacing

    def _fail_stale(self) -> None:
        """Fail (and re-queue) the trials whose worker is gone: on this machine at once (its
        process is dead), elsewhere once the heartbeat has been silent for the grace period."""
        for orphan in orphaned_trials(self.study):
            pid = orphan.system_attrs[ATTR_OWNER]["pid"]
            fail_and_requeue(
                self.study,
                orphan._trial_id,
                f"its worker (process {pid} on this machine) is gone",
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)

    def _evaluate(self, trial: optuna.Trial) -> None:
        guarded = guard_trial(trial)
        with heartbeat(self.study._storage, trial._trial_id, trial.number):
            outcome = run_objective(self.objective, guarded, self.catch, self._guard)
        with sigterm_deferred():  # the value is told (and the trial leaves in-flight) in full
            frozen = None
            if trial._trial_id not in self._abandoned:  # else failed by this process on SIGTERM
                frozen = tell_or_rescue(
                    self.study, self._guard, guarded, outcome.value, outcome.state, outcome.reason
                )
            if outcome.requeue and frozen is not None and frozen.state == TrialState.FAIL:
                self._guard.call("re-queue the trial", lambda: requeue(self.study, frozen))
                frozen = None  # not a failure of the objective: the failure count is left as is
            with self._lock:
                self._in_flight.pop(trial._trial_id, None)
                self.ran += 1
        if frozen is not None:
            self._count_failures(frozen)
            if self.on_trial is not None:
                self.on_trial(frozen)

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

    def _abandon_in_flight(self, exc: BaseException) -> None:
        """Fail the trials this process is running (and re-queue them), so none stays RUNNING."""
        with self._lock:
            in_flight = list(self._in_flight.values())
            self._in_flight.clear()
            self._abandoned.update(t._trial_id for t in in_flight)
        abandon(self.study, self._guard, in_flight, exc)
