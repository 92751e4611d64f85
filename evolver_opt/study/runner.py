"""Create or resume a merge-search study: storage, sampler, config check, shared start points.

The study stores its config (JSON) and a hash of it as user attributes; resuming it with a
different config or sampler stops with a message naming what differs. Every study, whatever
its sampler, starts from the same enqueued points: each expert alone and the static merges.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import optuna

from evolver_opt.errors import ConfigError
from evolver_opt.integrations.storage import open_storage
from evolver_opt.study.config import StudyConfig, config_differences
from evolver_opt.study.samplers import make_sampler

ATTR_CONFIG = "evolver_opt:config"
ATTR_IDENTITY = "evolver_opt:identity"
ATTR_HASH = "evolver_opt:config_hash"
ATTR_SAMPLER = "evolver_opt:sampler"


@dataclass(frozen=True)
class SamplerChoice:
    """A sampler by name and seed, as stored on the study."""

    name: str
    seed: int | None

    def as_json(self, config: StudyConfig) -> dict[str, Any]:
        options = config.evolver.model_dump(mode="json") if self.name == "evolver" else {}
        return {"name": self.name, "seed": self.seed, "options": options}


def default_study_name(config: StudyConfig, sampler: str, seed: int | None) -> str:
    return f"{config.search_label}-{sampler.replace(':', '-')}-seed{seed}"


def open_study(
    config: StudyConfig,
    initial_points: list[dict[str, float]],
    *,
    sampler: str = "evolver",
    seed: int | None = 0,
    storage: str | None = None,
    study_name: str | None = None,
    budget: int | None = None,
    heartbeat_interval: int = 10,
) -> optuna.Study:
    """Create the study (enqueueing the shared start points) or resume it after checking that
    its stored config and sampler match.

    ``heartbeat_interval``: seconds between a running trial's heartbeats (RDB storages); a
    trial silent for twice that long is failed and retried by the next worker."""
    choice = SamplerChoice(sampler, seed)
    name = study_name or default_study_name(config, sampler, seed)
    opened = open_storage(storage, heartbeat_interval=heartbeat_interval)
    evolver_options = config.evolver.model_dump()
    optuna_sampler = make_sampler(
        sampler,
        seed=seed,
        x0=initial_points[-1],
        budget=budget or config.n_trials,
        evolver_options=evolver_options,
    )
    try:
        study = optuna.create_study(
            study_name=name, storage=opened, sampler=optuna_sampler, direction="maximize"
        )
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=opened, sampler=optuna_sampler)
        created = False
    if not created and not _wait_initialized(study):
        created = True  # its creator died before initializing it: finish the job
    if created:
        study.set_user_attr(ATTR_CONFIG, json.loads(config.model_dump_json()))
        study.set_user_attr(ATTR_IDENTITY, config.identity())
        study.set_user_attr(ATTR_SAMPLER, choice.as_json(config))
        for point in initial_points:
            study.enqueue_trial(point, skip_if_exists=True)
        study.set_user_attr(ATTR_HASH, config.identity_hash())  # last: "initialized"
    else:
        _check_resume(study, config, choice)
    return study


def _wait_initialized(study: optuna.Study, timeout_s: float = 60.0) -> bool:
    """Wait for the process that created ``study`` to store its config and start points (so
    that workers started together enqueue them once); False if it never does."""
    deadline = time.monotonic() + timeout_s
    while ATTR_HASH not in study.user_attrs:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _check_resume(study: optuna.Study, config: StudyConfig, choice: SamplerChoice) -> None:
    attrs = study.user_attrs
    differences = []
    if attrs.get(ATTR_HASH) != config.identity_hash():
        differences += config_differences(attrs.get(ATTR_IDENTITY, {}), config.identity())
    stored_sampler = attrs.get(ATTR_SAMPLER, {})
    wanted = choice.as_json(config)
    for key in ("name", "seed", "options"):
        if stored_sampler.get(key) != wanted[key]:
            differences.append(
                f"sampler.{key}: stored {stored_sampler.get(key)!r}, now {wanted[key]!r}"
            )
    if differences:
        raise ConfigError(
            f"study {study.study_name!r} was created with another configuration; refusing to resume it.\n  "
            + "\n  ".join(differences)
            + "\nUse another --study-name (or --storage) for a new search."
        )


def finished_count(study: optuna.Study) -> int:
    return sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))


def run_study(
    study: optuna.Study,
    objective: Any,
    *,
    n_trials: int,
    n_jobs: int = 1,
    show_progress_bar: bool = False,
    max_consecutive_failures: int = 10,
    storage_url: str | None = None,
    storage_retry_s: float = 60.0,
) -> int:
    """Run until the study holds ``n_trials`` trials (a retry counts with the trial it
    retries); returns how many this call ran.

    The loop (:class:`evolver_opt.study.worker.WorkerLoop`) keeps values computed for a trial
    another process failed, fails and re-queues the trials in flight on SIGTERM/Ctrl-C, retries
    storage calls for ``storage_retry_s`` seconds and stops after ``max_consecutive_failures``
    FAIL trials in a row.
    """
    from evolver_opt.integrations.storage import redact
    from evolver_opt.study.worker import WorkerLoop

    bar = None
    if show_progress_bar:
        from tqdm import tqdm

        bar = tqdm(total=n_trials, initial=min(finished_count(study), n_trials), unit="trial")
    loop = WorkerLoop(
        study,
        objective,
        n_trials=n_trials,
        n_jobs=n_jobs,
        catch=(Exception,),
        max_consecutive_failures=max_consecutive_failures,
        storage_retry_s=storage_retry_s,
        url=redact(storage_url) if storage_url else "",
        on_trial=(lambda _t: bar.update(1)) if bar is not None else None,
    )
    try:
        return loop.run()
    finally:
        if bar is not None:
            bar.close()
        close = getattr(study.sampler, "close", None)  # NevergradSampler: its worker threads
        if callable(close):
            close()
