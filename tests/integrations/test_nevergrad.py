"""Evolver inside Nevergrad, and Nevergrad optimizers as Optuna samplers."""

from __future__ import annotations

import nevergrad as ng
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from evolver_opt import ConfigError, NevergradSampler, open_storage, register_nevergrad
from evolver_opt.integrations.nevergrad import EvolverOptimizer

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sphere(x: np.ndarray) -> float:
    return float(np.sum((np.asarray(x) - 0.5) ** 2))


def test_register_is_explicit_and_idempotent():
    first = register_nevergrad()
    assert register_nevergrad() is first
    assert isinstance(ng.optimizers.registry["Evolver"], EvolverOptimizer)


@pytest.mark.parametrize(("mutation", "tolerance"), [("interpolate", 3e-2), ("de", 1e-4)])
def test_converges_on_a_quadratic(mutation, tolerance):
    losses = []
    for seed in range(5):
        # seeded before the optimizer is built: it draws its Evolver seed from this state
        # (set afterwards, the seed came from numpy's unseeded global state: a flaky test)
        parametrization = ng.p.Array(shape=(4,))
        parametrization.random_state = np.random.RandomState(seed)
        opt = EvolverOptimizer(mutation=mutation)(parametrization, budget=800)
        losses.append(_sphere(opt.minimize(_sphere).value))
    assert np.median(losses) < tolerance


def test_every_ask_can_be_told_in_any_order_and_tell_not_asked_works():
    opt = register_nevergrad()(ng.p.Array(shape=(3,)), budget=60, num_workers=4)
    for _ in range(10):
        asked = [opt.ask() for _ in range(4)]
        for candidate in reversed(asked):
            opt.tell(candidate, _sphere(candidate.value))
    outsider = opt.parametrization.spawn_child(new_value=np.full(3, 0.5))
    opt.tell(outsider, 0.0)
    assert opt.num_tell_not_asked == 1
    np.testing.assert_allclose(opt.recommend().value, 0.5)


def test_dump_and_load_continue_identically(tmp_path):
    opt = EvolverOptimizer()(ng.p.Array(shape=(3,)), budget=100)
    opt.parametrization.random_state = np.random.RandomState(1)
    for _ in range(20):
        c = opt.ask()
        opt.tell(c, _sphere(c.value))
    opt.dump(tmp_path / "opt.pkl")
    loaded = EvolverOptimizer().load(tmp_path / "opt.pkl")
    for _ in range(10):
        a, b = opt.ask(), loaded.ask()
        np.testing.assert_array_equal(a.value, b.value)
        opt.tell(a, _sphere(a.value))
        loaded.tell(b, _sphere(b.value))


def test_seeded_runs_repeat():
    def run(seed):
        param = ng.p.Array(shape=(5,))
        param.random_state = np.random.RandomState(seed)
        return EvolverOptimizer()(param, budget=120).minimize(_sphere).value

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def _objective(trial: optuna.Trial) -> float:
    return _sphere([trial.suggest_float(f"w{j}", 0.0, 1.0) for j in range(4)])


@pytest.mark.parametrize("name", ["NGOpt", "TwoPointsDE", "CMA", "Evolver"])
def test_nevergrad_sampler_runs_on_sqlite_and_improves(name, tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'ng.db'}")
    study = optuna.create_study(storage=storage, sampler=NevergradSampler(name, seed=0, budget=60))
    for i in range(4):
        study.enqueue_trial({f"w{j}": float(i == j) for j in range(4)})
    study.optimize(_objective, n_trials=60)
    assert len(study.trials) == 60
    assert study.best_value < min(t.value for t in study.trials[:4]) / 4


def test_nevergrad_sampler_state_is_rebuilt_from_finished_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'ng.db'}"
    study = optuna.create_study(
        study_name="s", storage=open_storage(url), sampler=NevergradSampler("TwoPointsDE", seed=0)
    )
    study.optimize(_objective, n_trials=15)
    study.enqueue_trial({f"w{j}": 0.5 for j in range(4)})  # the optimum, evaluated by the queue
    study.optimize(_objective, n_trials=1)
    sampler = NevergradSampler("TwoPointsDE", seed=0)
    resumed = optuna.load_study(study_name="s", storage=open_storage(url), sampler=sampler)
    resumed.optimize(_objective, n_trials=1)
    (replay,) = sampler._state.values()
    finished = [t for t in resumed.trials if t.state == TrialState.COMPLETE]
    assert len(replay.told) == len(finished) - 1 + 0  # the last trial was asked, not yet replayed
    assert replay.optimizer.num_tell == len(finished) - 1
    assert _sphere(replay.optimizer.recommend().value) == pytest.approx(0.0)


def test_unknown_optimizer_lists_close_names():
    with pytest.raises(ConfigError, match="did you mean.*TwoPointsDE"):
        NevergradSampler("TwoPointDE")


_RECAST_SCRIPT = """
import optuna
from evolver_opt import NevergradSampler
optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.create_study(sampler=NevergradSampler("Cobyla", seed=0, budget=100))
study.optimize(lambda t: sum(t.suggest_float(f"x{i}", 0, 1) ** 2 for i in range(20)), n_trials=8)
print("done", flush=True)
"""


def test_a_scipy_based_optimizer_waiting_for_a_tell_does_not_keep_the_process_alive():
    """COBYLA runs in a Nevergrad thread that waits for the next tell after the last trial."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _RECAST_SCRIPT],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "done" in result.stdout, result.stderr[-2000:]


def test_run_study_stops_the_optimizer_threads():
    import threading

    from evolver_opt.search.runner import run_study

    study = optuna.create_study(sampler=NevergradSampler("Cobyla", seed=0, budget=100))
    run_study(study, lambda t: sum(t.suggest_float(f"x{i}", 0, 1) for i in range(20)), n_trials=6)
    for thread in threading.enumerate():
        if type(thread).__name__ == "_MessagingThread":
            thread.join(timeout=10)
            assert not thread.is_alive()
    assert len(study.trials) == 6
    study.sampler.close()  # idempotent; a later ask replays from storage
    study.optimize(lambda t: sum(t.suggest_float(f"x{i}", 0, 1) for i in range(20)), n_trials=1)
    assert len(study.trials) == 7


@pytest.mark.parametrize("lost", ["pruned", "failed"])
def test_a_sequential_optimizer_is_told_its_pruned_and_failed_trials(tmp_path, lost):
    """COBYLA (a scipy recast optimizer, as NGOpt may pick) waits for the tell of every
    candidate; a pruned or failed trial left untold blocked the next ask for ever."""
    import threading

    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 's.db'}",
        sampler=NevergradSampler("Cobyla", seed=0, budget=30),
    )

    def objective(trial: optuna.Trial) -> float:
        x = [trial.suggest_float(f"x{i}", -1.0, 1.0) for i in range(3)]
        value = float(sum(v * v for v in x))
        if trial.number % 3 == 2:
            if lost == "failed":
                raise RuntimeError("injected")
            trial.report(value + 1.0, 1)
            raise optuna.TrialPruned()
        return value

    done = threading.Event()

    def run() -> None:
        study.optimize(objective, n_trials=12, catch=(RuntimeError,))
        done.set()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    assert done.is_set(), "the optimizer blocked on an untold candidate"
    study.sampler.close()
    states = [t.state for t in study.trials]
    assert len(states) == 12
    assert states.count(TrialState.PRUNED if lost == "pruned" else TrialState.FAIL) == 4
