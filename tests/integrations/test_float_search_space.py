"""FloatSearchSpace (incremental, no deep copies) gives what Optuna's IntersectionSearchSpace
gives, restricted to non-single floats, after every trial of randomly grown studies."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.search_space import IntersectionSearchSpace
from optuna.trial import TrialState, create_trial

from evolver_opt.integrations._base import FloatSearchSpace

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


@pytest.mark.parametrize("seed", range(8))
def test_matches_optunas_intersection_after_every_trial(seed):
    rng = np.random.default_rng(seed)
    study = optuna.create_study()
    ours = FloatSearchSpace(study._storage)
    for _ in range(30):
        names = [f"p{i}" for i in range(6) if rng.random() < 0.85]
        dists = {n: DISTRIBUTIONS[int(rng.integers(len(DISTRIBUTIONS)))] for n in names}
        if rng.random() < 0.7:  # mostly the same distribution per name, as in a real study
            dists = {n: DISTRIBUTIONS[int(n[1]) % 3] for n in names}
        params = {
            n: d.to_external_repr(d.low if hasattr(d, "low") else 0) for n, d in dists.items()
        }
        state = STATES[int(rng.integers(len(STATES)))]
        values = [float(rng.random())] if state == TrialState.COMPLETE else None
        if state == TrialState.WAITING:
            params, dists = {}, {}
        study.add_trial(
            create_trial(state=state, params=params, distributions=dists, values=values)
        )
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
