"""Do more workers on one PostgreSQL study give proportionally more trials per hour?

Trials per hour at 1, 2 and 4 worker processes on one PostgreSQL study, for EvolverSampler and
CmaEsSampler, measured in one run. The objective has a fixed duration (``--trial-s``, a sleep,
so the machine's cores are not the limit): any shortfall from N x is the cost of sharing the
study (sampler work, storage round trips, lock waits). Each worker runs the loop that
``evolver-opt run`` uses (``WorkerLoop``: heartbeat, stale-trial check, budget count), on
D = 8 coefficients from 4 enqueued one-hot points. Printed per sampler and worker count:
trials, wall seconds, trials/hour, the ratio to one worker, and the fraction of worker time
spent outside the objective (waiting on the sampler and the database).

``--study STUDY.toml`` measures the real merge objective instead (the study's experts, merge
and dev evaluation; each worker sets up before the clock starts and evaluates with one torch
thread): on a CPU machine its trials are CPU-bound, so the ratio is bounded by the cores.

    python benchmarks/parallel_scaling.py --storage postgresql://postgres@127.0.0.1:5432/test
    python benchmarks/parallel_scaling.py --study studies/sentiment-domains.toml \
        --trials-per-worker 4
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
import uuid
from pathlib import Path

DIM, N_START = 8, 4


def _sleeping_objective(trial_s: float, busy: list[float]):
    def objective(trial) -> float:
        x = [trial.suggest_float(f"w{j}", 0.0, 1.0) for j in range(DIM)]
        start = time.perf_counter()
        time.sleep(trial_s)
        busy[0] += time.perf_counter() - start
        return sum((v - 0.3) ** 2 for v in x)

    return objective


def _merge_objective(study_toml: str, busy: list[float]):
    """The study's real objective, set up now (experts, task vectors, tokenized dev sets)."""
    import torch

    from evolver_opt.search.config import load_config
    from evolver_opt.search.objective import MergeObjective, build_setup

    torch.set_num_threads(1)
    inner = MergeObjective(build_setup(load_config(study_toml)))

    def objective(trial) -> float:
        start = time.perf_counter()
        try:
            return inner(trial)
        finally:
            busy[0] += time.perf_counter() - start

    return objective


def _worker(url, name, sampler_name, n_trials, trial_s, study_toml, go, out) -> None:
    import optuna

    from evolver_opt import open_storage
    from evolver_opt.runtime.worker import WorkerLoop
    from evolver_opt.search.samplers import make_sampler

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    x0 = None if study_toml else {f"w{j}": 0.25 for j in range(DIM)}
    sampler = make_sampler(sampler_name, seed=0, x0=x0)
    study = optuna.load_study(study_name=name, storage=open_storage(url), sampler=sampler)
    busy = [0.0]
    if study_toml:
        objective = _merge_objective(study_toml, busy)
    else:
        objective = _sleeping_objective(trial_s, busy)
    out.put("ready")

    go.wait()
    start = time.perf_counter()
    loop = WorkerLoop(study, objective, n_trials=n_trials)
    ran = loop.run()
    wall = time.perf_counter() - start
    out.put({"ran": ran, "wall": wall, "busy": busy[0], "end": time.time()})


def measure(
    url: str,
    sampler_name: str,
    workers: int,
    per_worker: int,
    trial_s: float,
    study_toml: str | None = None,
) -> dict:
    import optuna

    from evolver_opt import open_storage

    name = f"scaling-{sampler_name}-{workers}-{uuid.uuid4().hex[:8]}"
    storage = open_storage(url)
    study = optuna.create_study(study_name=name, storage=storage)
    for i in range(0 if study_toml else N_START):  # the real study: Evolver's random start
        study.enqueue_trial({f"w{j}": float(j % N_START == i) for j in range(DIM)})
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    n_trials = per_worker * workers
    procs = [
        ctx.Process(
            target=_worker,
            args=(url, name, sampler_name, n_trials, trial_s, study_toml, go, out),
        )
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    for _ in procs:  # every worker imported, connected and set up before the clock starts
        assert out.get(timeout=900) == "ready"
    start = time.time()
    go.set()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    wall = max(r["end"] for r in results) - start
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(numbers))), "trial numbers must be unique"
    optuna.delete_study(study_name=name, storage=storage)
    worker_wall = sum(r["wall"] for r in results)
    return {
        "sampler": sampler_name,
        "workers": workers,
        "trials": len(trials),
        "wall_s": round(wall, 2),
        "trials_per_hour": round(len(trials) / wall * 3600),
        "waiting_fraction": round(1 - sum(r["busy"] for r in results) / worker_wall, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--samplers", default="evolver,cmaes")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--trials-per-worker", type=int, default=24)
    parser.add_argument("--trial-s", type=float, default=0.5)
    parser.add_argument("--study", default=None, help="measure this study's real objective")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    for sampler_name in args.samplers.split(","):
        base = None
        for workers in (int(w) for w in args.workers.split(",")):
            row = measure(
                args.storage,
                sampler_name,
                workers,
                args.trials_per_worker,
                args.trial_s,
                args.study,
            )
            base = base or row["trials_per_hour"]
            row["ratio_to_1"] = round(row["trials_per_hour"] / base, 2)
            rows.append(row)
            print(
                f"{row['sampler']:>8} workers={row['workers']} trials={row['trials']:>4} "
                f"wall={row['wall_s']:>6.1f}s trials/h={row['trials_per_hour']:>6} "
                f"x{row['ratio_to_1']:.2f} waiting={row['waiting_fraction']:.1%}",
                flush=True,
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
