"""Top-k re-ranking of a study's answer on a larger dev sample (never a test split).

A study scored on ``dev_per_split`` examples of each dev split picks its best trial on a small
sample, so the top of the ranking is partly noise. ``rerank`` re-scores the k best COMPLETE
trials (by value; ties by trial number) on a larger sample of the same dev splits (None: all
of each), in the precision the study scored them in, and answers the best of those (ties: the
earlier study rank). The result is stored on the study as ``evolver_opt:rerank`` and shown in
its note.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

from evolver_opt.errors import ConfigError, StateError
from evolver_opt.search.attributes import (
    ATTR_CONFIG,
    ATTR_PRECISION,
    ATTR_RERANK,
    ATTR_SAMPLER,
    MAX_TOP_K,
    study_attrs,
)
from evolver_opt.search.config import StudyConfig, override_config, parse_config

if TYPE_CHECKING:
    from evolver_opt.search.objective import MergeSetup


@dataclass(frozen=True)
class RerankResult:
    """The k best trials by study dev, re-scored: ``scores[trial] = (study dev, re-scored
    dev)`` in study rank order; ``answer`` is the trial with the best re-scored dev."""

    k: int
    dev_per_split: int | None
    study_dev_per_split: int | None
    metric: str
    precision: str
    scores: dict[int, tuple[float, float]]
    answer: int

    def as_json(self) -> dict[str, Any]:
        trials = [
            {"trial": n, "study_dev": s, "rerank_dev": r} for n, (s, r) in self.scores.items()
        ]
        return {
            "k": self.k,
            "dev_per_split": self.dev_per_split,
            "study_dev_per_split": self.study_dev_per_split,
            "metric": self.metric,
            "precision": self.precision,
            "trials": trials,
            "answer": self.answer,
        }


def check_top_k(k: int) -> None:
    if not 1 <= k <= MAX_TOP_K:
        raise ConfigError(
            f"top-k must be at least 1 (at most {MAX_TOP_K}) trial to re-rank, got {k}"
        )


def check_rerankable(config: StudyConfig, sampler: str | None, study_name: str) -> None:
    """Raise unless the study's trials are coefficients that can be re-applied."""
    from evolver_opt.search.element import parse_element_sampler

    if config.granularity == "element":
        raise ConfigError(
            f"study {study_name!r} has granularity 'element': it evolves weights, not "
            "coefficients, so its trials cannot be re-applied and re-ranked; re-ranking needs a "
            "coefficient study (granularity model, layer or tensor)"
        )
    if sampler is not None and parse_element_sampler(sampler) is not None:
        raise ConfigError(
            f"study {study_name!r} ran the weight-space sampler {sampler!r}: its trials are "
            "weights, not coefficients, so they cannot be re-applied and re-ranked"
        )


def check_larger(study_sample: int | None, sample: int | None, study_name: str) -> None:
    """Raise unless ``sample`` (None: all of each dev split) is larger than the study's."""
    if study_sample is None:
        raise ConfigError(
            f"study {study_name!r} already scores the full dev splits (dev_per_split = None): "
            f"no sample is larger ({describe_sample(sample)} asked for), nothing to re-rank on"
        )
    if sample is not None and sample <= study_sample:
        raise ConfigError(
            f"dev_per_split = {sample} is not larger than study {study_name!r}'s own "
            f"dev_per_split = {study_sample}; give more examples per split or 'all'"
        )


def stored_config(study: optuna.Study, attrs: dict[str, Any] | None = None) -> StudyConfig:
    """The study's config as stored by ``open_study`` (a ``ConfigError`` when there is none);
    ``attrs``: its user attributes, if already read."""
    stored = (study_attrs(study) if attrs is None else attrs).get(ATTR_CONFIG)
    if stored is None:
        raise ConfigError(
            f"study {study.study_name!r} was not made by evolver-opt (no {ATTR_CONFIG})"
        )
    return parse_config(stored, source=f"study {study.study_name!r}")


def rerank_setup(
    study: optuna.Study, dev_per_split: int | None, *, reuse: MergeSetup | None = None
) -> MergeSetup:
    """A setup scoring ``dev_per_split`` examples of each of the study's dev splits (None: all),
    in the precision the study scored its trials in. ``reuse``: the study's own setup, whose
    engine is shared (after a run); otherwise the experts are loaded from the stored config.

    Refused: a weight-space study, or a sample not larger than the study's."""
    from evolver_opt.search.objective import build_setup, with_dev_sample

    attrs = study_attrs(study)
    config = stored_config(study, attrs)
    sampler = (attrs.get(ATTR_SAMPLER) or {}).get("name")
    check_rerankable(config, sampler, study.study_name)
    check_larger(config.dev_per_split, dev_per_split, study.study_name)
    if reuse is not None:
        if reuse.config.identity_hash() != config.identity_hash():
            raise ConfigError(
                f"the setup to reuse is not study {study.study_name!r}'s (another config)"
            )
        return with_dev_sample(reuse, dev_per_split)
    # what selection scored in: the recorded precision (studies from before it was recorded
    # ran in float32)
    used = (attrs.get(ATTR_PRECISION) or {}).get("used", "fp32")
    evaluation = {**config.evaluation.model_dump(mode="json"), "precision": used}
    larger = override_config(
        config,
        {"dev_per_split": dev_per_split, "evaluation": evaluation},
        source=f"study {study.study_name!r} re-ranked",
    )
    return build_setup(larger, precision_check=False)


def top_trials(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    """The ``k`` best COMPLETE trials by value (highest first; ties: lower trial number)."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.value is not None
    ]
    return sorted(complete, key=lambda t: (-t.value, t.number))[:k]  # type: ignore[operator]


def rerank(study: optuna.Study, setup: MergeSetup, k: int) -> RerankResult:
    """Re-score the ``k`` best trials of ``study`` with ``setup`` (see :func:`rerank_setup`),
    store the result as ``evolver_opt:rerank`` and return it. The working model is left
    holding the last re-scored trial's merge."""
    from evolver_opt.search.objective import evaluate_dev

    check_top_k(k)
    top = top_trials(study, k)
    if not top:
        raise ConfigError(f"study {study.study_name!r} has no COMPLETE trial to re-rank")
    if any(not key.endswith("/dev") for key in setup.dev_keys):
        raise ConfigError(f"re-ranking scores dev splits only, got {setup.dev_keys}")
    scores: dict[int, tuple[float, float]] = {}
    for trial in top:
        setup.apply(trial.params)
        result = evaluate_dev(setup)
        scores[trial.number] = (float(trial.value), float(result.score))  # type: ignore[arg-type]
    answer = top[0].number
    for number, (_, rescored) in scores.items():  # study rank order: ties keep the earlier
        if rescored > scores[answer][1]:
            answer = number
    config = stored_config(study)
    out = RerankResult(
        k=k,
        dev_per_split=setup.config.dev_per_split,
        study_dev_per_split=config.dev_per_split,
        metric=setup.config.metric,
        precision=setup.precision.used if setup.precision else setup.config.precision,
        scores=scores,
        answer=answer,
    )
    study.set_user_attr(ATTR_RERANK, out.as_json())
    return out


def unranked_newcomers(study: optuna.Study, stored: dict[str, Any]) -> list[int]:
    """Trials now in the study's top k (by study dev) that the stored re-ranking ``stored``
    (``evolver_opt:rerank``, schema-checked) did not re-score: its answer is stale when any.

    A re-ranking that names a trial the study does not hold as COMPLETE, or with another study
    dev, is a ``StateError`` naming the attribute (the study was changed outside evolver-opt)."""
    complete = {
        t.number: t.value
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    }
    for row in stored["trials"]:
        if complete.get(row["trial"]) != row["study_dev"]:
            held = "no COMPLETE trial" if row["trial"] not in complete else "another study dev"
            raise StateError(
                f"study {study.study_name!r}: user attribute {ATTR_RERANK} names trial "
                f"{row['trial']} with study dev {row['study_dev']!r}, but the study has {held} "
                "of that number; the study was changed outside evolver-opt (run evolver-opt "
                "rerank again to replace it)"
            )
    reranked = {row["trial"] for row in stored["trials"]}
    return [t.number for t in top_trials(study, stored["k"]) if t.number not in reranked]


def rerank_table(result: RerankResult) -> str:
    """The re-scored trials as plain text (the answer marked with ``*``)."""
    lines = [f"{'trial':>7}  {'study dev':>9}  {'re-scored dev':>13}"]
    for number, (study_dev, rescored) in result.scores.items():
        mark = " *" if number == result.answer else ""
        lines.append(f"{number:>7}  {study_dev:>9.4f}  {rescored:>13.4f}{mark}")
    return "\n".join(lines)


def describe_sample(n: int | None) -> str:
    """``all of each dev split`` or ``N examples of each dev split``."""
    return "all of each dev split" if n is None else f"{n} examples of each dev split"
