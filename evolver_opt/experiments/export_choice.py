"""Which trial ``evolver-opt export`` writes, refusing what cannot be exported as coefficients.

A coefficient study exports one COMPLETE trial: ``best`` (by dev) or ``--trial N``. A
weight-space study (granularity ``element``, or an ``evolver-element`` / ``evolver-merger:*``
sampler) has no coefficients to apply: its trials are weights, and a merger's answer is the
merge of its best population, not any one trial, so it is refused rather than exported as the
one expert a start point holds.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from evolver_opt.errors import ConfigError
from evolver_opt.search.attributes import ATTR_SAMPLER
from evolver_opt.search.config import StudyConfig

BEST = "best"
_NUMBER = re.compile(r"[0-9]{1,9}")  # ASCII digits only: int() would also take "²" or "١"


def check_exportable(study: optuna.Study, config: StudyConfig) -> None:
    """Raise unless ``study``'s trials are coefficients that can be merged and exported."""
    from evolver_opt.search.element import parse_element_sampler

    name = study.study_name
    sampler = _stored_sampler(study)
    if config.granularity == "element" or (
        sampler is not None and parse_element_sampler(sampler) is not None
    ):
        ran = f"the weight-space sampler {sampler!r}" if sampler else "granularity 'element'"
        raise ConfigError(
            f"study {name!r} ran {ran}: its trials are weights, not coefficients, and its answer "
            "(the best individual, or a merger's merge of its best population) is no single "
            "trial's parameters, so it cannot be exported as a merge recipe; export needs a "
            "coefficient study (granularity model, layer or tensor)"
        )


def pick_trial(study: optuna.Study, ref: str) -> FrozenTrial:
    """The COMPLETE trial ``ref`` names: ``best`` (by dev) or a trial number."""
    trials = study.get_trials(deepcopy=False)
    if ref == BEST:
        return _best(study, trials)
    if not _NUMBER.fullmatch(ref) or int(ref) >= len(trials):
        raise ConfigError(
            f"--trial {ref!r}: expected 'best' or a trial number from 0 to {len(trials) - 1}"
            if trials
            else f"--trial {ref!r}: study {study.study_name!r} has no trials yet"
        )
    trial = next(t for t in trials if t.number == int(ref))
    if trial.state != TrialState.COMPLETE:
        raise ConfigError(
            f"--trial {ref}: trial {trial.number} is {trial.state.name}, not COMPLETE; "
            "only a COMPLETE trial has a dev score and a merge to export"
        )
    return trial


def exportable_trial(study: optuna.Study, config: StudyConfig, ref: str) -> FrozenTrial:
    """:func:`check_exportable`, then :func:`pick_trial`."""
    check_exportable(study, config)
    return pick_trial(study, ref)


def _best(study: optuna.Study, trials: list[FrozenTrial]) -> FrozenTrial:
    if not any(t.state == TrialState.COMPLETE for t in trials):
        counts = Counter(t.state.name for t in trials)
        held = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no trials"
        raise ConfigError(
            f"study {study.study_name!r} has no COMPLETE trial yet ({held}), so there is no "
            "best trial to export; run it (evolver-opt run) until a trial completes"
        )
    return study.best_trial


def _stored_sampler(study: optuna.Study) -> Any:
    stored = study.user_attrs.get(ATTR_SAMPLER)
    name = stored.get("name") if isinstance(stored, dict) else None
    return name if isinstance(name, str) else None
