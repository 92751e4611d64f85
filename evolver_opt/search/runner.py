"""Create or resume a merge-search study: storage, sampler, config check, shared start points.

The study stores its config (JSON) and a hash of it as user attributes; resuming it with a
different config or sampler stops with a message naming what differs. Every study, whatever
its sampler, starts from the same enqueued points: each expert alone and the static merges.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from evolver_opt.errors import ConfigError
from evolver_opt.evaluation.precision import MIN_AGREEMENT
from evolver_opt.runtime.storage import open_storage
from evolver_opt.search.attributes import (
    ATTR_CONFIG,
    ATTR_HASH,
    ATTR_IDENTITY,
    ATTR_PRECISION,
    ATTR_SAMPLER,
    PrecisionCheck,
    study_attrs,
)
from evolver_opt.search.config import (
    StudyConfig,
    check_device,
    config_differences,
    identity_hash,
    with_precision,
)
from evolver_opt.search.forms import blend_methods, form_method, start_scales
from evolver_opt.search.samplers import (
    COEFFICIENT_EVOLVERS,
    EVOLVER_PLUS,
    SAMPLER_NAMES,
    check_sampler,
    make_sampler,
)

if TYPE_CHECKING:
    from evolver_opt.search.objective import MergeSetup

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass(frozen=True)
class SamplerChoice:
    """A sampler by name and seed, as stored on the study."""

    name: str
    seed: int | None

    def as_json(self, config: StudyConfig) -> dict[str, Any]:
        options = {}
        if self.name in COEFFICIENT_EVOLVERS:
            options = config.evolver.stored()
            if self.name == "evolver-plus":
                options.update(EVOLVER_PLUS)
        return {"name": self.name, "seed": self.seed, "options": options}


def preflight(
    config: StudyConfig,
    samplers: list[str],
    *,
    budget: int,
    storage: str | None,
    warn: Callable[[str], Any] = print,
) -> list[str]:
    """Check what a run needs before any expensive work (data, zoo, models): each sampler name
    and its options (resolved for the granularity), the device and the storage; ``warn`` gets
    a budget that leaves no trial to the sampler. Returns the resolved sampler names."""
    method = form_method(config.form)
    blended = blend_methods(method)
    if method is None:
        n_start = len(config.expert_specs()) + len(config.seed_merges)
        what = f"each expert alone and the static merges {list(config.seed_merges)}"
    elif blended:
        n = len(blended)
        n_start = n + n * (n - 1) // 2 + (n > 2)
        what = f"each of {list(blended)} at its tuned scale and their blends"
    else:
        n_start = len(start_scales(method))
        what = f"the {method} merge at each scale of its dev grid"
    if budget <= n_start:
        warn(
            f"warning: {budget} trials and {n_start} start points ({what}): "
            "every trial is a start point, so no "
            f"sampler proposes anything and all samplers tie; use --n-trials > {n_start}"
        )
    if not samplers:
        raise ConfigError("no sampler given; expected one or more of " + ", ".join(SAMPLER_NAMES))
    options = config.evolver.model_dump()
    resolved = [
        check_sampler(s, granularity=config.granularity, budget=budget, evolver_options=options)
        for s in samplers
    ]
    check_device(config.evaluation.device)
    open_storage(storage, heartbeat_interval=None)
    return resolved


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
    precision: PrecisionCheck | None = None,
) -> optuna.Study:
    """Create the study (enqueueing the shared start points) or resume it after checking that
    its stored config and sampler match. ``precision`` (the setup's check) is recorded on it.

    ``heartbeat_interval``: seconds between a running trial's heartbeats (RDB storages); a
    trial silent for twice that long is failed and retried by the next worker."""
    from evolver_opt.search.element import parse_element_sampler

    mode = parse_element_sampler(sampler)
    if mode is not None and mode.mode == "plain" and config.precision == "bf16":
        # the plain weight-space sampler scores in float32 (ElementObjective; mergers score in
        # the study's precision): say so in the identity
        setting = config.evaluation.precision
        config = with_precision(config, "fp32")
        precision = PrecisionCheck(
            setting, "fp32", "weight-space samplers keep float32 weights", MIN_AGREEMENT
        )
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
    study = claim_study(
        name,
        opened,
        optuna_sampler,
        identity=config.identity(),
        sampler_json=choice.as_json(config),
        config_json=json.loads(config.model_dump_json()),
        initial_points=initial_points,
        pruner=config.pruner.make(),
    )
    if precision is not None:
        study.set_user_attr(ATTR_PRECISION, precision.as_json())
    return study


def open_setup_study(setup: MergeSetup, sampler: str, **options: Any) -> optuna.Study:
    """:func:`open_study` for a built setup: its config, start points and precision check."""
    return open_study(
        setup.config,
        setup.initial_points(),
        sampler=sampler,
        precision=setup.precision,
        **options,
    )


def claim_study(
    name: str,
    storage: Any,
    sampler: optuna.samplers.BaseSampler,
    *,
    identity: dict[str, Any],
    sampler_json: dict[str, Any],
    config_json: dict[str, Any],
    initial_points: list[dict[str, float]],
    direction: str = "maximize",
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create study ``name`` (storing config, identity, sampler and its hash, and enqueueing
    the start points), or load it after checking that it is an evolver-opt study of the same
    identity and sampler."""
    study, created = create_or_load(name, storage, sampler, direction, pruner)
    if created:
        study.set_user_attr(ATTR_CONFIG, config_json)
        study.set_user_attr(ATTR_IDENTITY, identity)
        study.set_user_attr(ATTR_SAMPLER, sampler_json)
        for point in initial_points:
            study.enqueue_trial(point, skip_if_exists=True)
        study.set_user_attr(ATTR_HASH, identity_hash(identity))  # last: "initialized"
    else:
        _check_resume(study, identity, sampler_json, direction)
    return study


def create_or_load(
    name: str,
    storage: Any,
    sampler: optuna.samplers.BaseSampler,
    direction: str = "maximize",
    pruner: optuna.pruners.BasePruner | None = None,
) -> tuple[optuna.Study, bool]:
    """``(study, True)`` for a new study (``direction``) that this process must initialize, or the
    existing evolver-opt study of that name, once its creator has initialized it.

    A study of that name that evolver-opt did not make (a plain Optuna study: no
    ``evolver_opt:config``, or trials, another direction or attributes of its own) is refused at
    once rather than taken over."""
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, sampler=sampler, direction=direction, pruner=pruner
        )
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    if ATTR_HASH in study_attrs(study):
        return study, False
    _refuse_foreign(study, direction)
    if _wait_initialized(study):
        return study, False
    if ATTR_CONFIG in study_attrs(study):
        return study, True  # its creator died while initializing it: finish the job
    raise ConfigError(
        f"study {name!r} exists but was never set up by evolver-opt (no {ATTR_CONFIG} after "
        f"{CONFIG_WAIT_S:.0f} s); delete it (optuna delete-study --study-name {name} "
        "--storage URL) or choose another --study-name"
    )


INIT_WAIT_S = 60.0  # for the creator's start points to be enqueued
CONFIG_WAIT_S = 5.0  # for the creator's first attribute, set right after create_study


def _refuse_foreign(study: optuna.Study, direction: str) -> None:
    """Raise unless ``study`` looks like one an evolver-opt process is initializing right now."""
    attrs = study_attrs(study)
    ours = ATTR_CONFIG in attrs
    reasons = []
    if study.directions != [_direction(direction)]:
        reasons.append(f"its direction is {', '.join(d.name for d in study.directions)}")
    if not ours:
        if study.get_trials(deepcopy=False):
            reasons.append("it has trials but no evolver-opt configuration")
        foreign = sorted(k for k in attrs if not k.startswith("evolver_opt:"))
        if foreign:
            reasons.append(f"it has user attributes of its own ({', '.join(foreign[:5])})")
    if reasons:
        raise ConfigError(
            f"study {study.study_name!r} was not made by evolver-opt ({'; '.join(reasons)}); "
            "refusing to take it over. Choose another --study-name (or --storage)"
        )


def _wait_initialized(study: optuna.Study, timeout_s: float | None = None) -> bool:
    """Wait for the process that created ``study`` to store its config and start points (so
    that workers started together enqueue them once); False if it never does."""
    start = time.monotonic()
    deadline = start + (INIT_WAIT_S if timeout_s is None else timeout_s)
    while ATTR_HASH not in (attrs := study_attrs(study)):
        now = time.monotonic()
        # its creator stores the config right after creating it: an empty study still without
        # one after CONFIG_WAIT_S was made by something else
        if now > deadline or (ATTR_CONFIG not in attrs and now > start + CONFIG_WAIT_S):
            return False
        time.sleep(0.2)
    return True


def _direction(name: str) -> optuna.study.StudyDirection:
    return optuna.study.StudyDirection[name.upper()]


def _check_resume(
    study: optuna.Study, identity: dict[str, Any], wanted: dict[str, Any], direction: str
) -> None:
    attrs = study_attrs(study)
    differences = []
    if attrs.get(ATTR_HASH) != identity_hash(identity):
        differences += config_differences(attrs.get(ATTR_IDENTITY, {}), identity) or [
            f"config_hash: stored {attrs.get(ATTR_HASH)!r}, now {identity_hash(identity)!r}"
        ]
        stored_bf16 = attrs.get(ATTR_IDENTITY, {}).get("evaluation", {}).get("bf16", False)
        if stored_bf16 != identity.get("evaluation", {}).get("bf16", False):
            was = "bf16" if stored_bf16 else "fp32"
            differences.append(
                f"(its trials were scored in {was}: set [study.evaluation] precision = "
                f'"{was}" or EVOLVER_OPT_PRECISION={was} to resume it)'
            )
    if study.directions != [_direction(direction)]:
        stored = ", ".join(d.name for d in study.directions)
        differences.append(f"direction: stored {stored}, now {direction.upper()}")
    stored_sampler = attrs.get(ATTR_SAMPLER, {})
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


def _best_value(study: optuna.Study) -> float | None:
    try:
        return study.best_value
    except ValueError:  # no COMPLETE trial yet
        return None


def _advance(bar: Any, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """One more finished trial on ``bar``, with the study's best value so far."""
    bar.update(1)
    if trial.state == optuna.trial.TrialState.COMPLETE and trial.value is not None:
        current = bar.postfix or ""
        best = _best_value(study)
        if best is not None and f"{best:.4f}" not in current:
            bar.set_postfix_str(f"best {best:.4f}")


def finished_count(study: optuna.Study) -> int:
    return sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))


def _optimize_stock(
    study: optuna.Study, objective: Any, n_trials: int, n_jobs: int, show_progress_bar: bool
) -> int:
    """``study.optimize`` until the study holds ``n_trials`` finished trials."""
    before = finished_count(study)
    try:
        study.optimize(
            objective,
            n_trials=max(0, n_trials - before),
            n_jobs=n_jobs,
            catch=(Exception,),
            show_progress_bar=show_progress_bar,
            callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=FINISHED_STATES)],
        )
    finally:
        close = getattr(study.sampler, "close", None)
        if callable(close):
            close()
    return finished_count(study) - before


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

    The loop (:class:`evolver_opt.runtime.worker.WorkerLoop`) keeps values computed for a trial
    another process failed, fails and re-queues the trials in flight on SIGTERM/Ctrl-C, retries
    storage calls for ``storage_retry_s`` seconds and stops after ``max_consecutive_failures``
    FAIL trials in a row. With ``$EVOLVER_OPT_STOCK_OPTUNA=1`` it is Optuna's own
    ``study.optimize`` instead (none of those guarantees; a failed trial is caught and logged).
    """
    from evolver_opt.runtime.storage import redact, stock_optuna
    from evolver_opt.runtime.worker import WorkerLoop

    if stock_optuna():
        return _optimize_stock(study, objective, n_trials, n_jobs, show_progress_bar)

    bar = None
    if show_progress_bar:
        from tqdm import tqdm

        sampler = study.user_attrs.get(ATTR_SAMPLER, {}).get("name") or type(study.sampler).__name__
        bar = tqdm(
            total=n_trials,
            initial=min(finished_count(study), n_trials),
            unit="trial",
            desc=sampler,
            dynamic_ncols=True,
        )
        best = _best_value(study)
        if best is not None:
            bar.set_postfix_str(f"best {best:.4f}")
    loop = WorkerLoop(
        study,
        objective,
        n_trials=n_trials,
        n_jobs=n_jobs,
        catch=(Exception,),
        max_consecutive_failures=max_consecutive_failures,
        storage_retry_s=storage_retry_s,
        url=redact(storage_url) if storage_url else "",
        on_trial=(lambda t: _advance(bar, study, t)) if bar is not None else None,
    )
    try:
        return loop.run()
    finally:
        if bar is not None:
            bar.close()
        close = getattr(study.sampler, "close", None)  # NevergradSampler: its worker threads
        if callable(close):
            close()
