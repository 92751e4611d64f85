"""Which process runs a trial, so that a worker on the same machine can fail the trial of a
process that is gone at once, instead of waiting out the heartbeat's grace period.

When a worker takes a trial it records ``evolver_opt:owner`` (trial system attribute):
``{"trial": number, "host", "boot", "pidns", "pid", "start"}``: the host name, the kernel's
boot id, the PID namespace and the process's start time (``/proc/PID/stat``), which together
tell one live process from another that reuses its PID, or one in another container with the
same host name. A RUNNING trial whose owner is on this machine (same host, boot and PID
namespace) and whose process is no longer alive is *orphaned*: the worker loop fails it and
re-queues it, as the heartbeat would after its grace period. Any other RUNNING trial is left
to the heartbeat. The record is copied onto a retry with its parameters, so it names its trial
by number: a record of another trial (or of another shape) is not trusted.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

ATTR_OWNER = "evolver_opt:owner"
_MACHINE_KEYS = ("host", "boot", "pidns")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


@lru_cache(maxsize=1)
def machine() -> dict[str, str | None]:
    """This machine and PID namespace: host name, boot id, PID namespace (None where unknown)."""
    try:
        pidns: str | None = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = None
    return {
        "host": socket.gethostname(),
        "boot": _read("/proc/sys/kernel/random/boot_id"),
        "pidns": pidns,
    }


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` (clock ticks after boot), or None: gone or unknown."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    try:
        if fields[0] == "Z":  # a zombie: dead, not yet reaped
            return None
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def owner_record(number: int) -> dict[str, Any]:
    """What this process records on trial ``number`` when it takes it."""
    return {"trial": number, **machine(), "pid": os.getpid(), "start": process_start(os.getpid())}


def is_orphaned(trial: FrozenTrial) -> bool:
    """Whether RUNNING ``trial`` was taken by a process of this machine that is gone."""
    record = trial.system_attrs.get(ATTR_OWNER)
    if trial.state != TrialState.RUNNING or not isinstance(record, dict):
        return False
    here = machine()
    if record.get("trial") != trial.number or any(here[k] is None for k in _MACHINE_KEYS):
        return False
    if any(record.get(k) != here[k] for k in _MACHINE_KEYS):
        return False  # another machine or container: the heartbeat decides
    pid, start = record.get("pid"), record.get("start")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or pid == os.getpid():
        return False
    if not isinstance(start, int) or isinstance(start, bool):
        return False
    return process_start(pid) != start  # gone, a zombie, or its PID reused by another


def orphaned_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The study's RUNNING trials whose worker on this machine is gone."""
    running = study._storage.get_all_trials(
        study._study_id, deepcopy=False, states=(TrialState.RUNNING,)
    )
    return [t for t in running if is_orphaned(t)]
