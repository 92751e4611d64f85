"""What does one trial cost in sampler and storage time, as a study grows?

D = 400 coefficients (4 models x 100 groups) on a SQLite file. A history of finished Evolver
trials is copied into the study up to each checkpoint; at each checkpoint every sampler runs a
few trials (ask, 400 suggests, tell) on the same study. Printed per checkpoint and sampler:
the wall time per trial, the part spent inside the sampler, and the ratio of the wall time to
RandomSampler's measured in the same run (after one untimed trial that reads the newly added
trials into Optuna's cache, so no sampler pays for it). A last row times a fresh process's first trial
(load the study, then one trial) at the largest checkpoint.

    python benchmarks/sampler_overhead.py --checkpoints 0,500,1000,2000 --repeats 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import optuna
from samplers import initial_points, make_sampler

from evolver_opt import EvolverSampler, open_storage
from evolver_opt.experiments import synthetic

N_MODELS, N_GROUPS = 4, 100


class TimedSampler(optuna.samplers.BaseSampler):
    """Wraps a sampler and adds up the seconds spent in it."""

    def __init__(self, inner: optuna.samplers.BaseSampler) -> None:
        self.inner = inner
        self.seconds = 0.0

    def _timed(self, fn, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - start

    def infer_relative_search_space(self, study, trial):
        return self._timed(self.inner.infer_relative_search_space, study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._timed(self.inner.sample_relative, study, trial, search_space)

    def sample_independent(self, study, trial, name, distribution):
        return self._timed(self.inner.sample_independent, study, trial, name, distribution)

    def before_trial(self, study, trial):
        return self._timed(self.inner.before_trial, study, trial)

    def after_trial(self, study, trial, state, values):
        return self._timed(self.inner.after_trial, study, trial, state, values)


objective = synthetic.objective("sphere", N_MODELS, N_GROUPS)


def make_history(n: int) -> list[optuna.trial.FrozenTrial]:
    """``n`` finished Evolver trials, made in memory (cheap), to be copied into SQLite."""
    study = optuna.create_study(sampler=EvolverSampler(seed=0))
    for point in initial_points(N_MODELS, N_GROUPS):
        study.enqueue_trial(point)
    study.optimize(objective, n_trials=n)
    return study.get_trials(deepcopy=False)


def time_trials(study: optuna.Study, sampler: TimedSampler, repeats: int) -> tuple[float, float]:
    study.sampler = sampler
    sampler.seconds = 0.0
    start = time.perf_counter()
    for _ in range(repeats):
        trial = study.ask()
        study.tell(trial, objective(trial))
    return (time.perf_counter() - start) / repeats, sampler.seconds / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", default="0,500,1000,2000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samplers", default="random,evolver,cmaes,tpe,ng:TwoPointsDE")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    checkpoints = [int(c) for c in args.checkpoints.split(",")]
    names = args.samplers.split(",")
    history = make_history(max(checkpoints) + len(initial_points(N_MODELS, N_GROUPS)))
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'overhead.db'}"
        study = optuna.create_study(
            study_name="overhead", storage=open_storage(url), sampler=EvolverSampler(seed=0)
        )
        copied = 0
        print(
            f"D = {N_MODELS * N_GROUPS} coefficients, SQLite file, {args.repeats} trials per cell\n"
        )
        print(
            "| finished trials | sampler | ms/trial (wall) | ms/trial in sampler | wall / random |"
        )
        print("|---|---|---|---|---|")
        samplers = {
            name: TimedSampler(make_sampler(name, 0, N_MODELS, N_GROUPS, 10_000)) for name in names
        }
        for checkpoint in checkpoints:
            start = time.perf_counter()
            study.add_trials(history[copied:checkpoint])
            copied = checkpoint
            fill = time.perf_counter() - start
            time_trials(study, TimedSampler(optuna.samplers.RandomSampler(seed=1)), 1)  # warm cache
            rows = {
                name: time_trials(study, sampler, args.repeats)
                for name, sampler in samplers.items()
            }
            base = rows.get("random", next(iter(rows.values())))[0]
            for name, (wall, inside) in rows.items():
                print(
                    f"| {checkpoint} | {name} | {1e3 * wall:.0f} | {1e3 * inside:.1f} | {wall / base:.2f} |"
                )
            print(f"<!-- copying {checkpoint} trials took {fill:.1f} s -->")
        start = time.perf_counter()
        resumed = optuna.load_study(
            study_name="overhead", storage=open_storage(url), sampler=EvolverSampler(seed=0)
        )
        trial = resumed.ask()
        resumed.tell(trial, objective(trial))
        print(
            f"\nfresh process, first Evolver trial at {len(resumed.trials) - 1} trials: "
            f"{time.perf_counter() - start:.2f} s (load + ask + 400 suggests + tell)"
        )


if __name__ == "__main__":
    main()
