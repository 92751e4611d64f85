"""Create or resume a merge-search study: storage, sampler, config check, shared start points.

The study stores its config (JSON) and a hash of it as user attributes; resuming it with a
different config or sampler stops with a message naming what differs. Every study, whatever
its sampler, starts from the same enqueued points: each expert alone and the static merges.
"""

from __future__ import annotations

import json
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
    return f"{config.name}-{config.granularity}-{sampler.replace(':', '-')}-seed{seed}"


def open_study(
    config: StudyConfig,
    initial_points: list[dict[str, float]],
    *,
    sampler: str = "evolver",
    seed: int | None = 0,
    storage: str | None = None,
    study_name: str | None = None,
    budget: int | None = None,
) -> optuna.Study:
    """Create the study (enqueueing the shared start points) or resume it after checking that
    its stored config and sampler match."""
    choice = SamplerChoice(sampler, seed)
    name = study_name or default_study_name(config, sampler, seed)
    opened = open_storage(storage)
    evolver_options = config.evolver.model_dump()
    optuna_sampler = make_sampler(
        sampler,
        seed=seed,
        x0=initial_points[-1],
        budget=budget or config.n_trials,
        evolver_options=evolver_options,
    )
    study = optuna.create_study(
        study_name=name,
        storage=opened,
        sampler=optuna_sampler,
        direction="maximize",
        load_if_exists=True,
    )
    attrs = study.user_attrs
    if ATTR_HASH in attrs:
        _check_resume(study, config, choice)
    else:
        study.set_user_attr(ATTR_CONFIG, json.loads(config.model_dump_json()))
        study.set_user_attr(ATTR_IDENTITY, config.identity())
        study.set_user_attr(ATTR_HASH, config.identity_hash())
        study.set_user_attr(ATTR_SAMPLER, choice.as_json(config))
        for point in initial_points:
            study.enqueue_trial(point, skip_if_exists=True)
    return study


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
) -> int:
    """Run until the study has ``n_trials`` finished trials; returns how many this call ran."""
    remaining = n_trials - finished_count(study)
    if remaining <= 0:
        return 0
    failures = _ConsecutiveFailures(max_consecutive_failures)
    study.optimize(
        objective,
        n_trials=remaining,
        n_jobs=n_jobs,
        catch=(RuntimeError, ValueError),
        callbacks=[failures],
        show_progress_bar=show_progress_bar,
    )
    return remaining


class _ConsecutiveFailures:
    """Stops the study with a clear error after too many FAIL trials in a row."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == optuna.trial.TrialState.FAIL:
            self.count += 1
            if self.count >= self.limit:
                study.stop()
                raise ConfigError(
                    f"{self.count} trials failed in a row (last: trial {trial.number}); stopping. "
                    "See the trials' fail_reason in the storage."
                )
        else:
            self.count = 0
