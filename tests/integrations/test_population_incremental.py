"""EvolverSampler folds each finished trial into its memo once (only trials finished since its
last ask are read); a sampler that has watched the study grow must decide exactly as a fresh
sampler that derives everything at once, whatever the interleaving of asks, tells, failures, prunes,
NaNs and heartbeat retries."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages import RetryFailedTrialCallback
from optuna.trial import TrialState, create_trial

from evolver_opt import EvolverSampler
from evolver_opt.integrations._population import StudyCache
from evolver_opt.integrations.optuna_sampler import KEY_LINEAGE

DIM = 5
optuna.logging.set_verbosity(optuna.logging.ERROR)


def _study() -> optuna.Study:
    study = optuna.create_study(sampler=EvolverSampler(seed=3))
    for i in range(3):
        study.enqueue_trial({f"x{j}": float(i == j % 3) for j in range(DIM)})
    return study


def _ask(study: optuna.Study, fresh: bool) -> optuna.Trial:
    if fresh:
        study.sampler = EvolverSampler(seed=3)  # no memory of earlier asks
    trial = study.ask()
    for j in range(DIM):
        trial.suggest_float(f"x{j}", 0.0, 1.0)
    return trial


def _play(schedule: list[tuple[str, int, str]], fresh: bool) -> optuna.Study:
    """Replays ``schedule``: ("ask", -, -) or ("tell", k, outcome) for the k-th trial in flight."""
    study, in_flight = _study(), []
    for action, k, outcome in schedule:
        if action == "ask":
            in_flight.append(_ask(study, fresh))
            continue
        trial = in_flight.pop(k % len(in_flight))
        value = float(sum((v - 0.3) ** 2 for v in trial.params.values()))
        if outcome == "complete":
            study.tell(trial, value)
        elif outcome == "nan":
            study.tell(trial, float("nan"))
        elif outcome == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, state=TrialState.FAIL)
            if outcome == "retry":  # what the heartbeat does for a stale trial
                RetryFailedTrialCallback(max_retry=2)(
                    study, study._storage.get_trial(trial._trial_id)
                )
    return study


def _schedule(seed: int, n: int = 90) -> list[tuple[str, int, str]]:
    rng = np.random.default_rng(seed)
    outcomes = ["complete"] * 12 + ["fail", "pruned", "nan", "retry", "retry"]
    schedule, open_trials = [], 0
    for _ in range(n):
        if open_trials == 0 or (open_trials < 4 and rng.random() < 0.55):
            schedule.append(("ask", 0, ""))
            open_trials += 1
        else:
            schedule.append(("tell", int(rng.integers(8)), str(rng.choice(outcomes))))
            open_trials -= 1
    return schedule


@pytest.mark.parametrize("seed", range(6))
def test_long_lived_sampler_decides_like_a_fresh_one(seed):
    schedule = _schedule(seed)
    watched, fresh = _play(schedule, fresh=False), _play(schedule, fresh=True)
    a, b = watched.get_trials(deepcopy=False), fresh.get_trials(deepcopy=False)
    assert len(a) == len(b) > 40
    assert sum(KEY_LINEAGE in t.system_attrs for t in a) > 25  # offspring were drawn
    assert [t.state for t in a] == [t.state for t in b]
    assert [t.params for t in a] == [t.params for t in b]
    assert [t.system_attrs.get(KEY_LINEAGE) for t in a] == [
        t.system_attrs.get(KEY_LINEAGE) for t in b
    ]
    assert EvolverSampler(seed=3).population_info(fresh) == watched.sampler.population_info(watched)


def test_an_older_snapshot_after_a_newer_one_loses_nothing():
    """Threads of one process share the sampler but each reads its own snapshot of the trials,
    so the cache may be given an older one after a newer one."""
    study = optuna.create_study()
    x = FloatDistribution(0.0, 1.0)
    for _ in range(3):
        study.add_trial(create_trial(value=1.0, params={"x": 0.5}, distributions={"x": x}))
    older = study.get_trials(deepcopy=False)
    running = study.ask()
    running.suggest_float("x", 0.0, 1.0)
    cache = StudyCache(study._storage)
    assert [r.number for r in cache.update(study.get_trials(deepcopy=False), 1.0)] == [3]
    assert cache.update(older, 1.0) == []  # raised IndexError before
    study.tell(running, 0.5)
    cache.update(study.get_trials(deepcopy=False), 1.0)
    assert cache.numbers == {0, 1, 2, 3}  # trial 3 was still watched, and is now taken in
    assert [r.number for r in cache.finished.valued] == [0, 1, 2, 3]
