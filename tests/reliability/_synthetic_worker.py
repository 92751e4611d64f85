"""A synthetic study worker (no torch) run as a separate process by the fault tests.

usage: python _synthetic_worker.py URL NAME N_TRIALS MODE [ARG]
MODE: ``run`` (run to N_TRIALS), ``crash-after K`` (exit at once, with os._exit, right after
trial K's state is written and before the next ask), ``hang-at K`` (trial K sleeps for ever),
``sleep MS`` (every trial takes MS milliseconds). ``EVOLVER_TEST_RETRY_S`` bounds the retry of
storage calls (default 60 s). An :class:`EvolverError` is printed as ``Error: ...`` (exit 1),
as ``evolver-opt run`` does.
The study is EvolverSampler(seed=0, **json(EVOLVER_TEST_SAMPLER_OPTIONS)) over 6 floats, started from 4 enqueued one-hot points,
driven by :class:`evolver_opt.runtime.worker.WorkerLoop` (what `evolver-opt run` uses).
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import optuna

from evolver_opt import EvolverSampler, open_storage
from evolver_opt.errors import EvolverError
from evolver_opt.runtime.storage import redact
from evolver_opt.runtime.worker import WorkerLoop

DIM = 6
TARGET = np.linspace(0.2, 0.8, DIM)


def objective_for(hang_at: int = -1, sleep_s: float = 0.0):
    def objective(trial: optuna.Trial) -> float:
        x = np.array([trial.suggest_float(f"w{j}", 0.0, 1.0) for j in range(DIM)])
        if trial.number == hang_at:
            time.sleep(600)
        time.sleep(sleep_s)
        return float(np.sum((x - TARGET) ** 2))

    return objective


def open_synthetic(url: str, name: str, heartbeat: int | None = 1) -> optuna.Study:
    storage = open_storage(url, heartbeat_interval=heartbeat, grace_period=2 if heartbeat else None)
    options = json.loads(os.environ.get("EVOLVER_TEST_SAMPLER_OPTIONS", "{}"))
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=EvolverSampler(seed=0, **options),
        load_if_exists=True,
    )
    if not study.trials:
        for i in range(4):
            study.enqueue_trial({f"w{j}": float(j % 4 == i) for j in range(DIM)})
    return study


def main() -> None:
    url, name, n_trials, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    arg = int(sys.argv[5]) if len(sys.argv) > 5 else -1
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = open_synthetic(url, name)
    except EvolverError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)

    def on_trial(trial: optuna.trial.FrozenTrial) -> None:
        if mode == "crash-after" and trial.number == arg:
            os._exit(3)  # state written, next ask not made: a crash at the worst moment

    objective = objective_for(
        arg if mode == "hang-at" else -1, arg / 1000 if mode == "sleep" else 0.0
    )
    loop = WorkerLoop(
        study,
        objective,
        n_trials=n_trials,
        on_trial=on_trial,
        url=redact(url),
        storage_retry_s=float(os.environ.get("EVOLVER_TEST_RETRY_S", "60")),
    )
    try:
        ran = loop.run()
    except EvolverError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"ran {ran} trials")


if __name__ == "__main__":
    main()
