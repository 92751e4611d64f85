"""The objective of a merge search: trial -> coefficients -> in-place merge -> dev score.

Everything that does not depend on the coefficients (checkpoints, task vectors, tokenized dev
sets) is built once per process in :class:`MergeSetup`; a trial only suggests its floats,
writes the merge into the one working model and evaluates it.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from evolver_opt.data import load_split
from evolver_opt.data.pipeline import ensure_prepared
from evolver_opt.errors import CheckpointError, ConfigError
from evolver_opt.evaluation import Evaluator
from evolver_opt.evaluation.precision import MIN_AGREEMENT, dtype_of
from evolver_opt.evaluation.tokenizer import shared_tokenizer
from evolver_opt.integrations.optuna_sampler import EvolverSampler
from evolver_opt.integrations.trial_attrs import parent_value
from evolver_opt.merge import MergeEngine, get_method
from evolver_opt.runtime.storage import flush_params
from evolver_opt.search.blend_scales import tune_blend_scales
from evolver_opt.search.config import StudyConfig, check_device, engine_granularity
from evolver_opt.search.forms import (
    blend_methods,
    blend_start_points,
    build_form,
    form_method,
    form_start_points,
)
from evolver_opt.search.precision_cache import check_key, load_check, save_check
from evolver_opt.search.precision_check import PrecisionCheck, check_precision
from evolver_opt.zoo import base_checkpoint, build_zoo, resolve_base


@dataclass
class MergeSetup:
    """The expensive, coefficient-independent part of a study: built once per process."""

    config: StudyConfig
    engine: MergeEngine
    evaluator: Evaluator
    tokenizer: Any
    dev_keys: list[str]
    head_of: dict[str, str]  # split key -> expert whose head scores it (heads kept separate)
    precision: PrecisionCheck | None = None  # what trials are scored in, and why
    # held while a trial writes the one working model and scores it: threads of one process
    # (``run --n-jobs K``) take turns, so each value is its own parameters' score
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    # start point coefficients -> (dev score, its user attributes): every study of a compare
    # enqueues the same start points, scored once per process (the score is deterministic)
    start_scores: dict[tuple[float, ...], tuple[float, dict[str, Any]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    # a blend form's methods -> (scale, dev score) chosen on dev, once (``named_initial_points``)
    blend_scales: dict[str, tuple[float, float]] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def param_names(self) -> list[str]:
        return list(self.engine.form_genome(self.form).param_names)

    @property
    def form(self) -> str | None:
        """The merge method whose parts the coefficients weigh (None: the task vectors)."""
        return form_method(self.config.form)

    def named_initial_points(self) -> dict[str, dict[str, float]]:
        """Each expert alone, then the configured static merges (all as coefficients); in a
        method form, the method at each scale of its dev grid; in a blend, each method at its
        tuned scale and their blends (search/forms.py)."""
        genome = self.engine.form_genome(self.form)
        lo, hi = self.config.bounds
        if blend_methods(self.form):
            if self.blend_scales is None:
                self.blend_scales = tune_blend_scales(self, lambda: float(evaluate_dev(self).score))
            points = blend_start_points(self.blend_scales, genome.shape[1])
        elif self.form is not None:
            points = form_start_points(self.config.form, genome.shape, (lo, hi))
        else:
            points = {name: genome.one_hot(name) for name in genome.models}
            for name in self.config.seed_merges:
                points[name] = get_method(name).coefficients(self.engine)
        return {name: genome.params(np.clip(p, lo, hi)) for name, p in points.items()}

    def apply(self, params: dict[str, float]) -> None:
        """Write a trial's merge (its coefficients in the study's form) into the working model."""
        self.engine.apply(self.coefficients(params), form=self.form)

    def initial_points(self) -> list[dict[str, float]]:
        return list(self.named_initial_points().values())

    def coefficients(self, params: dict[str, float]) -> np.ndarray:
        return coefficients_of(self.config, self.engine, params)


def build_engine(
    config: StudyConfig,
    *,
    data_dir: Path | None = None,
    zoo_root: Path | None = None,
    model_dtype: torch.dtype | None = None,
) -> MergeEngine:
    """Load and check the experts and stack their task vectors (building the zoo if needed).

    The rows are float32; ``model_dtype`` (default float32) is the working model's."""
    experts = config.expert_specs(zoo_root)
    base = resolve_base(config.base) if config.base else base_checkpoint(config.zoo, zoo_root)  # type: ignore[arg-type]
    if (
        config.zoo is not None
        and not config.experts
        and any(not Path(p).is_dir() for p in [base, *(e.path for e in experts)])
    ):
        wanted = config.zoo_experts or config.zoo.domains  # only the experts this study merges
        recipe = config.zoo.model_copy(update={"domains": tuple(wanted)})
        build_zoo(recipe, root=zoo_root, data_dir=data_dir)
    for e in experts:
        if not Path(e.path).is_dir():
            raise CheckpointError(f"expert {e.name!r}: directory {e.path} does not exist")
    return MergeEngine.from_dirs(
        base,
        [e.path for e in experts],
        granularity=engine_granularity(config),
        heads=config.heads,
        device=config.evaluation.device,
        dtype=torch.float32,
        model_dtype=model_dtype or torch.float32,
        model_names=[e.name for e in experts],
    )


def build_setup(
    config: StudyConfig,
    *,
    data_dir: Path | None = None,
    zoo_root: Path | None = None,
    precision_check: bool = True,
) -> MergeSetup:
    """Load the experts, stack their task vectors, tokenize the dev sets and settle the
    evaluation precision (once). ``setup.config`` has the precision resolved.

    ``precision_check=False`` takes the configured precision as it is, without scoring the
    start points in both (for a precision already decided, e.g. re-scoring a study's trials)."""
    check_device(config.evaluation.device)  # before the data, the zoo and the models
    precision = config.precision  # "auto" decided (and $EVOLVER_OPT_PRECISION read) now
    data_dir = ensure_prepared(data_dir)
    engine = build_engine(
        config, data_dir=data_dir, zoo_root=zoo_root, model_dtype=dtype_of(precision)
    )
    check_max_length(config, engine.model)
    experts = config.expert_specs(zoo_root)
    tokenizer = shared_tokenizer(
        [*((e.name, e.path) for e in experts), ("base", engine.checkpoints.base.path)]
    )
    evaluator, dev_keys, head_of = _dev_evaluator(config, engine, tokenizer, data_dir)
    setup = MergeSetup(config, engine, evaluator, tokenizer, dev_keys, head_of)
    build_form(setup)
    ev = config.evaluation
    if not precision_check:
        setup.precision = PrecisionCheck(
            ev.precision, precision, "as decided before", MIN_AGREEMENT
        )
        return setup
    points = {n: setup.coefficients(p) for n, p in setup.named_initial_points().items()}
    key = check_key(setup, points, MIN_AGREEMENT)
    cached = load_check(key, ev.precision) if precision == "bf16" else None
    if cached is not None:  # the same setup was checked before: skip the two dev passes
        setup.precision = replace(cached, reason=cached.reason + "; cached check")
        if cached.used == "fp32":
            engine.set_model_dtype(torch.float32)
    else:
        setup.precision = check_precision(
            engine, evaluator, setup.dev_keys, points, setting=ev.precision, used=precision,
            form=setup.form,
        )  # fmt: skip
        if precision == "bf16":
            save_check(key, setup.precision)
    if setup.precision.used != precision:  # auto fell back to float32
        setup.config = config.model_copy(
            update={"evaluation": ev.model_copy(update={"precision": setup.precision.used})}
        )
    return setup


# Models whose learned positions start after the padding index (fairseq's convention).
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text")


def token_positions(model_config: Any) -> int | None:
    """How many token positions the model has learned (None: no fixed limit)."""
    positions = getattr(model_config, "max_position_embeddings", None)
    if not isinstance(positions, int) or isinstance(positions, bool):
        return None
    if getattr(model_config, "model_type", None) in _OFFSET_POSITIONS:
        positions -= int(getattr(model_config, "pad_token_id", 1) or 0) + 1
    return positions


def check_max_length(config: StudyConfig, model: Any) -> None:
    """Refuse an ``evaluation.max_length`` beyond the model's token positions."""
    positions = token_positions(getattr(model, "config", None))
    wanted = config.evaluation.max_length
    if positions is not None and wanted > positions:
        raise ConfigError(
            f"[study.evaluation] max_length = {wanted} exceeds the {positions} token positions "
            f"of the base model {config.base_name!r} (max_position_embeddings); use "
            f"max_length <= {positions}"
        )


def with_dev_sample(
    setup: MergeSetup, dev_per_split: int | None, *, data_dir: Path | None = None
) -> MergeSetup:
    """``setup`` scoring another sample of the same dev splits (None: all of each), sharing
    its engine, tokenizer and precision (nothing is reloaded)."""
    config = setup.config.model_copy(update={"dev_per_split": dev_per_split})
    evaluator, dev_keys, head_of = _dev_evaluator(
        config, setup.engine, setup.tokenizer, ensure_prepared(data_dir)
    )
    return MergeSetup(
        config,
        setup.engine,
        evaluator,
        setup.tokenizer,
        dev_keys,
        head_of,
        setup.precision,
        lock=setup.lock,  # the same working model
    )


def _dev_evaluator(
    config: StudyConfig, engine: MergeEngine, tokenizer: Any, data_dir: Path
) -> tuple[Evaluator, list[str], dict[str, str]]:
    """The evaluator of ``config``'s dev splits (its sample of each), their keys, and the
    expert whose head scores each split when heads are kept separate."""
    splits = [
        load_split(domain, "dev", data_dir=data_dir).subset(config.dev_per_split)
        for domain in config.dev
    ]
    head_of = {}
    if not engine.heads_merged:
        names = set(engine.model_names)
        for split in splits:
            if split.domain not in names:
                raise ConfigError(
                    f"heads are kept separate, so dev domain {split.domain!r} needs the expert of "
                    f"the same name for its head; experts are {sorted(names)}"
                )
            head_of[split.key] = split.domain
    ev = config.evaluation
    evaluator = Evaluator(
        engine.model,
        tokenizer,
        splits,
        batch_size=ev.batch_size,
        device=ev.device,
        max_length=ev.max_length,
        before_split=(lambda key: engine.use_head(head_of[key])) if head_of else None,
    )
    return evaluator, [s.key for s in splits], head_of


def coefficients_of(
    config: StudyConfig, engine: MergeEngine, params: dict[str, float]
) -> np.ndarray:
    """The (models x groups) coefficients of a trial (in a blend form: methods x groups);
    ``average`` normalizes each group."""
    return engine.form_genome(form_method(config.form)).normalized(params, config.form)


def evaluate_dev(
    setup: MergeSetup,
    stop_below: float | None = None,
    *,
    stages: tuple[float, ...] = (1.0,),
    on_stage: Any = None,
) -> Any:
    """The mean dev score of the working model as it is now (racing when ``stop_below``; each
    task's own head when heads are separate), optionally in stages (``Evaluator.dev_score``)."""
    return setup.evaluator.dev_score(
        setup.dev_keys,
        stop_below=stop_below,
        metric=setup.config.metric,
        stages=stages,
        on_stage=on_stage,
    )


class MergeObjective:
    """``objective(trial)``: one float per coefficient, merge in place, mean dev score.

    When the trial is an Evolver offspring, the parent's dev score is known and racing is on,
    evaluation stops as soon as the offspring cannot beat it; the lost race is recorded in user
    attributes and the trial is PRUNED (a lost offspring).

    Threads share the one working model: the merge and its scoring hold ``setup.lock``, so with
    ``n_jobs > 1`` only the sampler and the storage work of trials overlap.
    """

    def __init__(self, setup: MergeSetup) -> None:
        self.setup = setup
        self.lower, self.upper = setup.config.bounds

    def __call__(self, trial: optuna.Trial) -> float:
        setup = self.setup
        params = {
            name: trial.suggest_float(name, self.lower, self.upper) for name in setup.param_names
        }
        flush_params(trial)  # in the database before evaluating: a crash leaves them for a retry
        threshold = self._race_threshold(trial)
        staged = _prunable(trial, setup.config)
        key = tuple(params.values()) if _is_start_point(trial) and threshold is None else None
        with setup.lock:  # no other thread writes the working model until this score is read
            if key is not None and key in setup.start_scores:
                value, attrs = setup.start_scores[key]
                for name, attr in {**attrs, "score_reused": True}.items():
                    trial.set_user_attr(name, attr)
                return value
            start = time.perf_counter()
            setup.apply(params)
            merge_s = time.perf_counter() - start
            value = score_on_dev(trial, setup, threshold=threshold, merge_s=merge_s, staged=staged)
            if key is not None:
                setup.start_scores[key] = (value, dict(trial.user_attrs))
            return value

    def _race_threshold(self, trial: optuna.Trial) -> float | None:
        if not self.setup.config.racing or self.setup.config.metric != "accuracy":
            return None
        return parent_value(trial)


def _prunable(trial: optuna.Trial, config: StudyConfig) -> bool:
    """Staged and open to the study's pruner: a pruner is configured, the trial is not an
    Evolver's (it races its parent exactly) and not an enqueued start point."""
    if config.pruner.name == "none" or isinstance(trial.study.sampler, EvolverSampler):
        return False
    return not _is_start_point(trial)


def _is_start_point(trial: optuna.Trial) -> bool:
    """An enqueued start point (``study.enqueue_trial``), not a sampler's proposal."""
    attrs = trial.study._storage.get_trial_system_attrs(trial._trial_id)
    return "fixed_params" in attrs


class _StagePruned(Exception):
    def __init__(self, stage: int, value: float, seen: int) -> None:
        super().__init__(stage, value, seen)
        self.stage, self.value, self.seen = stage, value, seen


def _stage_reporter(trial: optuna.Trial, n_stages: int) -> Any:
    """``on_stage``: report the running score (step = dev examples seen), ask the pruner."""

    def on_stage(stage: int, value: float, seen: int) -> None:
        trial.report(value, seen)
        if stage < n_stages - 1 and trial.should_prune():
            raise _StagePruned(stage, value, seen)

    return on_stage


def score_on_dev(
    trial: optuna.Trial,
    setup: MergeSetup,
    *,
    threshold: float | None,
    merge_s: float,
    beaten: str = "parent",
    staged: bool = False,
) -> float:
    """Evaluate the merged working model on dev (racing: stop below ``threshold``; ``staged``:
    report each stage to the study's pruner), record the trial's user attributes, and return
    the score. A lost race (``race_lost``) or a pruned trial (``pruned``) is PRUNED; a
    non-finite score is an error."""
    start = time.perf_counter()
    trial.set_user_attr("merge_s", round(merge_s, 4))
    trial.set_user_attr("raced", threshold is not None)
    stages = setup.config.pruner.stages if staged else (1.0,)
    try:
        result = evaluate_dev(
            setup,
            stop_below=threshold,
            stages=stages,
            on_stage=_stage_reporter(trial, len(stages)) if staged else None,
        )
    except _StagePruned as stop:
        trial.set_user_attr("eval_s", round(time.perf_counter() - start, 4))
        trial.set_user_attr("examples_seen", stop.seen)
        trial.set_user_attr("pruned", {"stage": stop.stage, "value": stop.value})
        raise optuna.TrialPruned(
            f"pruned by {setup.config.pruner.name} after {stop.seen} dev examples "
            f"(running score {stop.value:.4f})"
        ) from None
    trial.set_user_attr("eval_s", round(time.perf_counter() - start, 4))
    trial.set_user_attr("examples_seen", int(result.n_seen))
    if result.stopped_early:
        trial.set_user_attr(
            "race_lost", {"parent": threshold, "best_possible": result.best_possible}
        )
        raise optuna.TrialPruned(
            f"offspring cannot beat its {beaten} ({result.best_possible:.4f} < {threshold:.4f})"
        )
    for key, r in result.per_split.items():
        trial.set_user_attr(f"dev:{key}", getattr(r, setup.config.metric))
    if result.logprob is not None:
        trial.set_user_attr("dev_logprob", round(result.logprob, 6))
    if result.score is None or not math.isfinite(result.score):
        raise ConfigError(f"dev score is {result.score!r}; expected a finite number")
    return float(result.score)
