"""Weight-space Evolver studies: sampler names, the objective and the answer.

Sampler names (``evolver-opt compare --samplers ...``, ``run --sampler ...``):

* ``evolver-element``: the released code's weight-space Evolver. An offspring is
  ``where(mask, (1 - F) x_i + F x_r, x_i)`` over every scalar; its fitness is its own dev
  score; it replaces its target only if better. The answer is the best individual by dev score.
* ``evolver-merger:METHOD``: Evolver with a merger. The offspring tentatively replaces its
  target, the population is merged with the static method ``METHOD`` (``average``,
  ``task_arithmetic``, ``ties``, ``dare``, ``fisher``, ``regmean``) and that merge's dev score is
  the fitness (greedy on the merged score). The answer is the merge of the best population by
  dev score. Fisher and RegMean use each expert's cached training statistics for the slot it
  seeded, as the released code does (:class:`~evolver_opt.search.merge_stats.SlotStats`).

The initial population is the study's enqueued points: each fine-tuned model alone and the
configured static merges. Lineage is decided by
:class:`~evolver_opt.integrations.element_sampler.ElementEvolverSampler`; the weights are
rebuilt by :class:`~evolver_opt.merge.weight_population.WeightPopulation` (memory: the
population's ``(pop_size + 1)`` rows; see that module).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from evolver_opt.core.weight_evolution import ElementLineage, Population, replay
from evolver_opt.errors import ConfigError
from evolver_opt.integrations.element_sampler import (
    element_lineage,
    element_population,
    element_records,
    read_study_info,
)
from evolver_opt.merge import get_method
from evolver_opt.merge.methods import list_methods, method_class
from evolver_opt.merge.weight_population import WeightPopulation
from evolver_opt.search.merge_stats import SlotStats, StoredStats, ensure_stats, spec_for
from evolver_opt.search.objective import MergeObjective, MergeSetup, score_on_dev

PLAIN_NAME = "evolver-element"
MERGER_PREFIX = "evolver-merger:"
# Static methods the merger runs over the population; Fisher and RegMean with the statistics
# of the expert that seeded each slot (cached with the expert: study.merge_stats).
MERGER_METHODS = tuple(list_methods(lambda cls: cls.merger))
STATS_ARGUMENT = {
    m: method_class(m).statistics_argument
    for m in list_methods(lambda cls: cls.merger and cls.statistics_argument is not None)
}
ATTR_ANSWER = "evolver_opt:element_answer"


@dataclass(frozen=True)
class ElementMode:
    """A weight-space sampler name, parsed."""

    mode: str  # "plain" or "merger"
    method: str | None = None

    @property
    def name(self) -> str:
        return PLAIN_NAME if self.mode == "plain" else MERGER_PREFIX + str(self.method)


def parse_element_sampler(name: str) -> ElementMode | None:
    """The weight-space mode that sampler ``name`` selects, or None for a coefficient sampler."""
    if name == PLAIN_NAME:
        return ElementMode("plain")
    if name.startswith(MERGER_PREFIX):
        method = name[len(MERGER_PREFIX) :]
        if method not in MERGER_METHODS:
            raise ConfigError(
                f"sampler {name!r}: the merger must be one of {list(MERGER_METHODS)} "
                f"(e.g. {MERGER_PREFIX}average); got {method!r}"
            )
        return ElementMode("merger", method)
    return None


def resolve_sampler(granularity: str, sampler: str) -> str:
    """The sampler to run: with granularity ``element``, ``evolver`` means ``evolver-element``
    and coefficient samplers are refused (there are no coefficients to sample)."""
    if granularity != "element" or parse_element_sampler(sampler) is not None:
        return sampler
    if sampler == "evolver":
        return PLAIN_NAME
    raise ConfigError(
        f"granularity 'element' evolves weights, not coefficients, so sampler {sampler!r} has "
        f"nothing to sample; use {PLAIN_NAME} or {MERGER_PREFIX}METHOD "
        f"(METHOD in {list(MERGER_METHODS)}), or a coefficient granularity"
    )


def make_objective(setup: MergeSetup, sampler: str) -> Any:
    """The objective for ``sampler``: weight-space or the coefficient ``MergeObjective``."""
    mode = parse_element_sampler(sampler)
    return MergeObjective(setup) if mode is None else ElementObjective(setup, mode)


class ElementObjective:
    """``objective(trial)`` for weight-space studies (the lineage comes from the sampler).

    * ``init``: the enqueued coefficients, applied and scored like a coefficient trial;
    * ``population`` (merger): the merge of the initial population, scored;
    * ``offspring``: replay the population from the study, build the offspring (plain: into
      the working model; merger: into one buffer, swapped into its target's row for the merge),
      score it, racing against the incumbent where exact. An offspring whose parent (merger:
      population) was replaced since it was decided is PRUNED as stale: replay would reject it.
    """

    def __init__(self, setup: MergeSetup, mode: ElementMode) -> None:
        self.setup = setup
        self.mode = mode
        self.method = get_method(mode.method) if mode.method is not None else None
        self._populations: dict[str, Any] = {}  # study name -> WeightPopulation
        self._spare: Any = None
        self._slot_stats: dict[int, Any] = {}  # population -> merge params (Fisher, RegMean)

    # -- the trial ----------------------------------------------------------------------
    def __call__(self, trial: optuna.Trial) -> float:
        # plain: offspring are written into the working model and copied between it and the
        # float32 rows exactly, so the study is scored in float32 (open_study records so).
        # merger: the rows stay float32 and every merge is written into the working model
        # rounded once, so trials are scored in the study's precision (bfloat16 where the setup
        # chose it). The lock: threads (``n_jobs > 1``) share the working model, rows, dtype.
        plain = self.mode.mode == "plain"
        with self.setup.lock:
            dtype = torch.float32 if plain else self.setup.engine.model_dtype
            with self.setup.engine.model_precision(dtype):
                return self._score(trial)

    def _score(self, trial: optuna.Trial) -> float:
        lineage = element_lineage(trial)
        if lineage is None:
            raise ConfigError(
                f"trial {trial.number} has no weight-space lineage: sampler {self.mode.name!r} "
                "needs ElementEvolverSampler (evolver_opt.search.samplers.make_sampler)"
            )
        start = time.perf_counter()
        threshold = None
        if lineage.role == "init":
            lo, hi = self.setup.config.bounds
            params = {n: trial.suggest_float(n, lo, hi) for n in self.setup.param_names}
            self.setup.apply(params)
        else:
            population, weights = self.sync(trial.study)
            stale = self._stale(lineage, population, weights)
            if stale:
                trial.set_user_attr("stale", stale)
                raise optuna.TrialPruned(f"lost offspring: {stale}")
            threshold = self._build(lineage, population, weights)
            trial.set_user_attr("population_mb", round(weights.nbytes() / 2**20, 3))
        return score_on_dev(
            trial,
            self.setup,
            threshold=threshold if self._can_race() else None,
            merge_s=time.perf_counter() - start,
            beaten="incumbent",
        )

    def _can_race(self) -> bool:
        config = self.setup.config
        return config.racing and config.metric == "accuracy" and not self.setup.head_of

    def _stale(self, lineage: ElementLineage, population: Population, weights: Any) -> str | None:
        if self.mode.mode == "merger" and list(lineage.base) != population.holders:
            return "the population changed since this trial was decided"
        if lineage.role == "offspring":
            assert lineage.slot is not None
            if population.holders[lineage.slot] != lineage.parent_trial:
                return f"slot {lineage.slot}'s individual was replaced since it was decided"
            if not weights.has(lineage.reference_trial):
                return f"reference trial {lineage.reference_trial} is no longer held"
        return None

    def _build(self, lineage: ElementLineage, population: Population, weights: Any) -> float | None:
        """Write what trial ``lineage`` scores into the working model; returns the incumbent."""
        engine = self.setup.engine
        if lineage.role == "population":
            weights.merge(self.method, **self._merge_params(weights))
            return None
        assert lineage.slot is not None
        if self.mode.mode == "plain":
            weights.offspring_into(engine.output, lineage)
            engine.mark_written({"element_offspring": lineage.trial})
            return population.values[lineage.slot]
        if self._spare is None or self._spare.shape != weights.row(0).shape:
            self._spare = torch.empty_like(weights.row(0))  # float32, as the rows
        weights.offspring_into(self._spare, lineage)
        # a separable merger (average, task_arithmetic, fisher, regmean) computes only this
        # slot's part; the others merge every row (WeightPopulation.merge_offspring)
        params = self._merge_params(weights)
        weights.merge_offspring(self.method, lineage.slot, self._spare, lineage.trial, **params)
        return population.score

    def _merge_params(self, weights: Any) -> dict[str, Any]:
        """The merger's statistics argument (Fisher, RegMean: per slot), built once per study."""
        assert self.mode.method is not None
        argument = STATS_ARGUMENT.get(self.mode.method)
        if argument is None:
            return {}
        key = id(weights)
        if key not in self._slot_stats:
            kind = self.mode.method
            paths = ensure_stats(self.setup, kind, spec_for(self.setup), echo=_quiet)
            stored = StoredStats(self.setup.engine, kind, paths)
            self._slot_stats[key] = {argument: SlotStats(stored, weights.init_coefficients)}
        return self._slot_stats[key]

    # -- the population -----------------------------------------------------------------
    def sync(self, study: optuna.Study) -> tuple[Population, Any]:
        """Replay ``study`` and bring this process's rows up to date (catching up if new)."""
        trials = study.get_trials(deepcopy=False)
        population = element_population(study, trials)
        weights = self._populations.get(study.study_name)
        if weights is None:
            info = read_study_info(study)
            assert info is not None
            by_number = {t.number: t for t in trials}
            coefficients = [
                self.setup.coefficients(_init_params(by_number[n])) for n in info["init"]
            ]
            weights = self._populations[study.study_name] = WeightPopulation(
                self.setup.engine, coefficients
            )
        lineages = {}
        for t in trials:
            lineage = element_lineage(t)
            if lineage is not None:
                lineages[t.number] = lineage
        unfinished = [t.number for t in trials if not t.state.is_finished()]
        weights.sync(population, lineages, unfinished)
        return population, weights

    def apply_answer(self, study: optuna.Study) -> float | None:
        """Put the answer into the working model: the best individual by dev (plain) or the
        merge of the best population (merger). Returns its dev score (None: none scored yet);
        stores it as the study user attribute ``evolver_opt:element_answer``. The working
        model must hold float32 weights (``engine.model_precision``), as during the trials."""
        if self.setup.engine.model_dtype != torch.float32:
            raise ConfigError("apply_answer needs the working model in float32 (model_precision)")
        population, weights = self.sync(study)
        value = population.answer_value()
        if value is None:
            return None
        if self.mode.mode == "merger":
            weights.merge(self.method, **self._merge_params(weights))
            trial = population.score_trial
        else:
            slot = population.best_slot()
            assert slot is not None
            self.setup.engine.output.copy_(weights.row(slot))
            self.setup.engine.mark_written({"element_answer": population.holders[slot]})
            trial = population.holders[slot]
        study.set_user_attr(
            ATTR_ANSWER,
            {"mode": self.mode.name, "trial": trial, "dev": value, "holders": population.holders},
        )
        return value


def answer_curve(study: optuna.Study, mode: str) -> list[float]:
    """The answer's dev score after each finished trial (trial order), for best-so-far plots.

    Plain mode: the best individual so far. Merger mode: the merged population's score, the
    first known score standing in for the trials before the population was scored.
    """
    info = read_study_info(study)
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    if info is None:
        return []
    records = element_records(trials)
    curve: list[float | None] = []
    for i in range(len(records)):
        curve.append(replay(info["mode"], info["init"], records[: i + 1]).answer_value())
    known = [v for v in curve if v is not None]
    if not known:
        return []
    first = known[0]
    out = [first if v is None else v for v in curve]
    return np.maximum.accumulate(out).tolist() if mode == "plain" else out


def _init_params(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    if trial.state == TrialState.COMPLETE and trial.params:
        return dict(trial.params)
    fixed = trial.system_attrs.get("fixed_params")
    if not isinstance(fixed, dict):
        raise ConfigError(f"initial trial {trial.number} has no enqueued parameters")
    return {k: float(v) for k, v in fixed.items()}


def _quiet(_message: str) -> None:
    """Statistics loading is silent inside trials (the baselines report it)."""
