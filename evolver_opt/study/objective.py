"""The objective of a merge search: trial -> coefficients -> in-place merge -> dev score.

Everything that does not depend on the coefficients (checkpoints, task vectors, tokenized dev
sets) is built once per process in :class:`MergeSetup`; a trial only suggests its floats,
writes the merge into the one working model and evaluates it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from evolver_opt.errors import CheckpointError, ConfigError
from evolver_opt.integrations._batched_storage import flush_params
from evolver_opt.integrations.optuna_sampler import offspring_info
from evolver_opt.study.config import StudyConfig, check_device, engine_granularity


@dataclass
class MergeSetup:
    """The expensive, coefficient-independent part of a study: built once per process."""

    config: StudyConfig
    engine: Any  # evolver_opt.merge.MergeEngine
    evaluator: Any  # evolver_opt.evaluation.Evaluator
    tokenizer: Any
    dev_keys: list[str]
    head_of: dict[str, str]  # split key -> expert whose head scores it (heads kept separate)

    @property
    def param_names(self) -> list[str]:
        return list(self.engine.param_names)

    def initial_points(self) -> list[dict[str, float]]:
        """Each expert alone, then the configured static merges (all as coefficients)."""
        from evolver_opt.merge import get_method

        points = [self.engine.one_hot(i) for i in range(self.engine.n_models)]
        for name in self.config.seed_merges:
            points.append(get_method(name).coefficients(self.engine))
        lo, hi = self.config.bounds
        return [
            dict(zip(self.param_names, np.clip(p, lo, hi).ravel().tolist(), strict=True))
            for p in points
        ]

    def coefficients(self, params: dict[str, float]) -> np.ndarray:
        return coefficients_of(self.config, self.engine, params)


def build_engine(
    config: StudyConfig, *, data_dir: Path | None = None, zoo_root: Path | None = None
) -> Any:
    """Load and check the experts and stack their task vectors (building the zoo if needed)."""
    import torch

    from evolver_opt.merge import MergeEngine
    from evolver_opt.zoo import base_checkpoint, build_zoo, resolve_base

    experts = config.expert_specs(zoo_root)
    base = resolve_base(config.base) if config.base else base_checkpoint(config.zoo, zoo_root)  # type: ignore[arg-type]
    if (
        config.zoo is not None
        and not config.experts
        and any(not Path(p).is_dir() for p in [base, *(e.path for e in experts)])
    ):
        build_zoo(config.zoo, root=zoo_root, data_dir=data_dir)
    for e in experts:
        if not Path(e.path).is_dir():
            raise CheckpointError(f"expert {e.name!r}: directory {e.path} does not exist")
    ev = config.evaluation
    return MergeEngine.from_dirs(
        base,
        [e.path for e in experts],
        granularity=engine_granularity(config),
        heads=config.heads,
        device=ev.device,
        dtype=torch.bfloat16 if ev.bf16 else torch.float32,
        model_names=[e.name for e in experts],
    )


def build_setup(
    config: StudyConfig, *, data_dir: Path | None = None, zoo_root: Path | None = None
) -> MergeSetup:
    """Load the experts, stack their task vectors and tokenize the dev sets (once)."""
    from evolver_opt.data import load_split
    from evolver_opt.data.pipeline import ensure_prepared
    from evolver_opt.evaluation import Evaluator
    from evolver_opt.evaluation.tokenizer import shared_tokenizer

    check_device(config.evaluation.device)  # before the data, the zoo and the models
    data_dir = ensure_prepared(data_dir)
    engine = build_engine(config, data_dir=data_dir, zoo_root=zoo_root)
    experts = config.expert_specs(zoo_root)
    tokenizer = shared_tokenizer(
        [*((e.name, e.path) for e in experts), ("base", engine.checkpoints.base.path)]
    )
    splits = [
        load_split(domain, "dev", data_dir=data_dir).subset(config.dev_per_split)
        for domain in config.dev
    ]
    ev = config.evaluation
    evaluator = Evaluator(
        engine.model,
        tokenizer,
        splits,
        batch_size=ev.batch_size,
        device=ev.device,
        max_length=ev.max_length,
    )
    head_of = {}
    if not engine.heads_merged:
        names = {e.name for e in experts}
        for split in splits:
            if split.domain not in names:
                raise ConfigError(
                    f"heads are kept separate, so dev domain {split.domain!r} needs the expert of "
                    f"the same name for its head; experts are {sorted(names)}"
                )
            head_of[split.key] = split.domain
    return MergeSetup(config, engine, evaluator, tokenizer, [s.key for s in splits], head_of)


def coefficients_of(config: StudyConfig, engine: Any, params: dict[str, float]) -> np.ndarray:
    """The (models x groups) coefficients of a trial; ``average`` normalizes each group."""
    c = engine.as_array(params)
    if config.form == "average":
        total = c.sum(axis=0, keepdims=True)
        c = np.where(total > 0, c / np.where(total > 0, total, 1.0), 1.0 / c.shape[0])
    return c


def evaluate_dev(setup: MergeSetup, stop_below: float | None = None) -> Any:
    """The mean dev score of the working model as it is now (racing when ``stop_below``)."""
    if setup.head_of:  # one head per task: switch heads per split; no joint racing bound
        from evolver_opt.evaluation import MeanResult

        per_split = {}
        for key in setup.dev_keys:
            setup.engine.use_head(setup.head_of[key])
            per_split[key] = setup.evaluator.evaluate(key, metric=setup.config.metric)
        values = [getattr(r, setup.config.metric) for r in per_split.values()]
        return MeanResult(
            metric=setup.config.metric, score=float(np.mean(values)), per_split=per_split
        )
    return setup.evaluator.dev_score(
        setup.dev_keys, stop_below=stop_below, metric=setup.config.metric
    )


class MergeObjective:
    """``objective(trial)``: one float per coefficient, merge in place, mean dev score.

    When the trial is an Evolver offspring, the parent's dev score is known and racing is on,
    evaluation stops as soon as the offspring cannot beat it; the lost race is recorded in user
    attributes and the trial is PRUNED (a lost offspring).
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
        start = time.perf_counter()
        setup.engine.apply(setup.coefficients(params))
        merge_s = time.perf_counter() - start
        return score_on_dev(trial, setup, threshold=self._race_threshold(trial), merge_s=merge_s)

    def _race_threshold(self, trial: optuna.Trial) -> float | None:
        if (
            not self.setup.config.racing
            or self.setup.config.metric != "accuracy"
            or self.setup.head_of
        ):
            return None
        lineage = offspring_info(trial)
        if lineage is None or lineage.role != "offspring" or lineage.parent_value is None:
            return None
        return lineage.parent_value


def score_on_dev(
    trial: optuna.Trial,
    setup: MergeSetup,
    *,
    threshold: float | None,
    merge_s: float,
    beaten: str = "parent",
) -> float:
    """Evaluate the merged working model on dev (racing: stop below ``threshold``), record the
    trial's user attributes, and return the score. A lost race is PRUNED (``race_lost``); a
    non-finite score is an error."""
    start = time.perf_counter()
    result = evaluate_dev(setup, stop_below=threshold)
    trial.set_user_attr("merge_s", round(merge_s, 4))
    trial.set_user_attr("eval_s", round(time.perf_counter() - start, 4))
    trial.set_user_attr("raced", threshold is not None)
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
    if result.score is None or not math.isfinite(result.score):
        raise ConfigError(f"dev score is {result.score!r}; expected a finite number")
    return float(result.score)
