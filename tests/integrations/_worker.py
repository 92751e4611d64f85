"""A study worker run as a separate process by the resume tests.

usage: python _worker.py STORAGE_URL STUDY_NAME N_COMPLETE SLEEP_S [HANG_AT]
Runs EvolverSampler(seed=0) until the study has N_COMPLETE finished COMPLETE trials; trial
number HANG_AT (if given) hangs in its evaluation, to be killed there.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from evolver_opt import EvolverSampler, open_storage

DIM = 6
TARGET = np.linspace(0.2, 0.8, DIM)


def main() -> None:
    url, name, n_complete, sleep_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    hang_at = int(sys.argv[5]) if len(sys.argv) > 5 else -1
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=EvolverSampler(seed=0), load_if_exists=True
    )
    if not study.trials:
        for i in range(4):
            study.enqueue_trial({f"w{j}": float(j % 4 == i) for j in range(DIM)})

    def objective(trial: optuna.Trial) -> float:
        x = np.array([trial.suggest_float(f"w{j}", 0.0, 1.0) for j in range(DIM)])
        time.sleep(600 if trial.number == hang_at else sleep_s)
        return float(np.sum((x - TARGET) ** 2))

    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if done < n_complete:
        study.optimize(
            objective, callbacks=[MaxTrialsCallback(n_complete, states=(TrialState.COMPLETE,))]
        )


if __name__ == "__main__":
    main()
