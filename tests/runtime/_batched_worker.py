"""A worker killed by test_batched_storage: suggests, flushes, says so, then hangs.

usage: python _batched_worker.py STORAGE_URL STUDY_NAME
"""

from __future__ import annotations

import sys
import time

import optuna

from evolver_opt import flush_params, open_storage

N_PARAMS = 50


def main() -> None:
    url, name = sys.argv[1], sys.argv[2]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # No idle timer: only flush_params can put the parameters in the database before the kill.
    storage = open_storage(url, heartbeat_interval=1, grace_period=2, flush_after=None)
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(seed=1)
    )

    def objective(trial: optuna.Trial) -> float:
        total = sum(trial.suggest_float(f"w{j}", 0.0, 1.0) for j in range(N_PARAMS))
        flush_params(trial)
        print("evaluating", trial.number, flush=True)
        time.sleep(600)
        return total

    study.optimize(objective, n_trials=1)


if __name__ == "__main__":
    main()
