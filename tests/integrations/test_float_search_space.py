"""FloatSearchSpace (incremental, no deep copies) gives what Optuna's IntersectionSearchSpace
gives, restricted to non-single floats, after every trial of randomly grown studies."""

from __future__ import annotations

import copy

import numpy as np
import optuna
import pytest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.search_space import IntersectionSearchSpace
from optuna.trial import FrozenTrial, TrialState, create_trial

from evolver_opt.integrations import _base
from evolver_opt.integrations._base import KEY_SEARCH_SPACE, FloatSearchSpace

DISTRIBUTIONS = [
    FloatDistribution(0.0, 1.0),
    FloatDistribution(0.0, 2.0),
    FloatDistribution(1e-3, 1.0, log=True),
    FloatDistribution(0.5, 0.5),  # single: never in the relative space
    IntDistribution(0, 3),
    CategoricalDistribution(["a", "b"]),
]
STATES = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.WAITING]


def _reference(study: optuna.Study) -> dict:
    space = IntersectionSearchSpace(include_pruned=True).calculate(study)
    return {k: d for k, d in space.items() if isinstance(d, FloatDistribution) and not d.single()}


def _grow(study: optuna.Study, rng: np.random.Generator, states: list = STATES) -> None:
    """Adds one random trial."""
    names = [f"p{i}" for i in range(6) if rng.random() < 0.85]
    dists = {n: DISTRIBUTIONS[int(rng.integers(len(DISTRIBUTIONS)))] for n in names}
    if rng.random() < 0.7:  # mostly the same distribution per name, as in a real study
        dists = {n: DISTRIBUTIONS[int(n[1]) % 3] for n in names}
    params = {n: d.to_external_repr(d.low if hasattr(d, "low") else 0) for n, d in dists.items()}
    state = states[int(rng.integers(len(states)))]
    values = [float(rng.random())] if state == TrialState.COMPLETE else None
    if state == TrialState.WAITING:
        params, dists = {}, {}
    study.add_trial(create_trial(state=state, params=params, distributions=dists, values=values))


@pytest.mark.parametrize("seed", range(8))
def test_matches_optunas_intersection_after_every_trial(seed):
    rng = np.random.default_rng(seed)
    study = optuna.create_study()
    ours = FloatSearchSpace(study._storage)
    for _ in range(30):
        _grow(study, rng)
        assert ours.update(study.get_trials(deepcopy=False)) == _reference(study)


def test_a_running_trial_is_counted_once_it_finishes():
    study = optuna.create_study()
    ours = FloatSearchSpace(study._storage)
    d = FloatDistribution(0.0, 1.0)
    study.add_trial(
        create_trial(params={"a": 0.1, "b": 0.2}, distributions={"a": d, "b": d}, value=1.0)
    )
    running = study.ask()
    running.suggest_float("a", 0.0, 1.0)
    assert set(ours.update(study.get_trials(deepcopy=False))) == {"a", "b"}
    study.tell(running, 0.5)  # finished without "b": the intersection loses it
    assert set(ours.update(study.get_trials(deepcopy=False))) == {"a"} == set(_reference(study))


@pytest.mark.parametrize("seed", range(4))
def test_a_fresh_space_resumed_from_the_checkpoint_matches_optuna(seed, monkeypatch):
    monkeypatch.setattr(_base, "CHECKPOINT_EVERY", 3)
    rng = np.random.default_rng(seed)
    study = optuna.create_study()
    watching = FloatSearchSpace(study._storage, study._study_id)  # writes the checkpoints
    for k in range(30):  # trial 20 stays waiting
        _grow(study, rng, [TrialState.WAITING] if k == 20 else STATES[:3])
        trials = study.get_trials(deepcopy=False)
        assert watching.update(trials) == _reference(study)
        fresh = FloatSearchSpace(study._storage, study._study_id)  # a resumed process
        assert fresh.update(trials) == _reference(study)
    # the checkpoint covers the trials below the first unfinished one, up to 3 behind
    below = study._storage.get_study_system_attrs(study._study_id)[KEY_SEARCH_SPACE]["below"]
    assert 17 < below <= 20


class _Unreadable(FrozenTrial):
    @property
    def distributions(self):  # type: ignore[override]
        raise AssertionError(f"trial {self.number} was read below the checkpoint")


def test_a_resumed_space_reads_one_trial_below_the_checkpoint():
    """Only the checkpoint's last trial is read (to check the checkpoint against it)."""
    study = optuna.create_study()
    d = FloatDistribution(0.0, 1.0)
    for k in range(130):
        names = ["a", "b"] if k != 7 else ["a"]  # trial 7 drops "b"
        study.add_trial(
            create_trial(
                params=dict.fromkeys(names, 0.5), distributions=dict.fromkeys(names, d), value=k
            )
        )
    FloatSearchSpace(study._storage, study._study_id).update(study.get_trials(deepcopy=False))
    below = study._storage.get_study_system_attrs(study._study_id)[KEY_SEARCH_SPACE]["below"]
    assert below == 130
    study.add_trial(
        create_trial(params={"a": 0.5, "c": 0.5}, distributions={"a": d, "c": d}, value=0.0)
    )
    trials = [copy.copy(t) for t in study.get_trials(deepcopy=False)]
    for t in trials[: below - 1]:
        t.__class__ = _Unreadable
    assert set(FloatSearchSpace(study._storage, study._study_id).update(trials)) == {"a"}


def test_a_checkpoint_the_trials_contradict_is_ignored(caplog):
    """Valid JSON with wrong values (a bound of 1e6, a ``below`` past the end) is not used."""
    study = optuna.create_study()
    d = FloatDistribution(0.0, 1.0)
    for _ in range(3):
        study.add_trial(create_trial(params={"a": 0.5}, distributions={"a": d}, value=1.0))
    wrong = FloatDistribution(0.0, 1e6)
    for below, dist in ((3, wrong), (50, d)):
        study._storage.set_study_system_attr(
            study._study_id,
            KEY_SEARCH_SPACE,
            {"below": below, "distributions": [distribution_to_json(dist)], "names": {"a": 0}},
        )
        caplog.clear()
        with caplog.at_level("WARNING"):
            space = FloatSearchSpace(study._storage, study._study_id).update(study.get_trials())
        assert space == {"a": d}
        assert "does not match the study's trials" in caplog.text


def test_a_malformed_checkpoint_is_ignored_with_a_warning(caplog):
    study = optuna.create_study()
    d = FloatDistribution(0.0, 1.0)
    for names in (["a", "b"], ["a"]):
        study.add_trial(
            create_trial(
                params=dict.fromkeys(names, 0.5), distributions=dict.fromkeys(names, d), value=1.0
            )
        )
    study._storage.set_study_system_attr(
        study._study_id,
        KEY_SEARCH_SPACE,
        {"below": 2, "distributions": ["not json"], "names": {"a": 0}},
    )
    with caplog.at_level("WARNING"):
        space = FloatSearchSpace(study._storage, study._study_id).update(study.get_trials())
    assert set(space) == {"a"} == set(_reference(study))
    assert "malformed study attribute evolver:search_space" in caplog.text
