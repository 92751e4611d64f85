"""What does one 400-coefficient trial cost in Optuna storage, stock vs ``open_storage``?

D = 400 coefficients (4 models x 100 groups). One study on one database; it grows to each
checkpoint by Evolver trials written through ``open_storage`` (fast), then at each checkpoint
every sampler runs a few trials (ask, 400 ``suggest_float``, ``flush_params``, evaluation,
tell) on the same study through two storages opened on the same database in the same run:

* **stock**: what plain Optuna gives for the URL (``optuna.load_study(storage=URL)``: an
  ``RDBStorage`` behind Optuna's cache; ``JournalStorage`` for a journal file);
* **ours**: ``evolver_opt.open_storage(URL)``.

Per cell: wall ms per trial, the part inside the sampler (its own compute, timed around every
sampler call), storage = wall - sampler - evaluation (Optuna's and the database's part), and
the process's CPU ms per trial (steadier than wall on a shared machine; a PostgreSQL server's
own CPU is not in it).
Each path first runs one untimed trial, so that reading the trials added since its last cell
into Optuna's cache is not counted against the next sampler. A last table times a fresh
process's first trial (load the study, ask, 400 suggests, tell; imports not counted) at the
largest checkpoint, in a subprocess per path.

    python benchmarks/trial_overhead.py --backend sqlite --checkpoints 0,1000,2000
    python benchmarks/trial_overhead.py --backend postgresql --checkpoints 0,2000
    python benchmarks/trial_overhead.py --backend journal --checkpoints 0,2000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState
from sampler_overhead import TimedSampler
from samplers import initial_points, make_sampler

from evolver_opt import EvolverSampler, open_storage
from evolver_opt.experiments.synthetic import genome, loss_function
from evolver_opt.runtime.storage import flush_params

N_MODELS, N_GROUPS = 4, 100
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
NAMES = genome(N_MODELS, N_GROUPS).param_names
LOSS = loss_function("sphere", N_MODELS, N_GROUPS)
POSTGRES_URL = os.environ.get(
    "EVOLVER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


class Objective:
    """400 suggests, flush, evaluate; adds up the seconds spent evaluating."""

    def __init__(self) -> None:
        self.eval_s = 0.0

    def __call__(self, trial: optuna.Trial) -> float:
        c = np.array([trial.suggest_float(name, 0.0, 1.0) for name in NAMES])
        flush_params(trial)
        start = time.perf_counter()
        value = LOSS(c.reshape(N_MODELS, N_GROUPS))
        self.eval_s += time.perf_counter() - start
        return value


def run_trials(study: optuna.Study, n: int, objective: Objective) -> None:
    for _ in range(n):
        trial = study.ask()
        study.tell(trial, objective(trial))


def stock_storage(url: str) -> optuna.storages.BaseStorage:
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    return optuna.storages.get_storage(url)


def ours_storage(url: str) -> optuna.storages.BaseStorage:
    return open_storage(url, heartbeat_interval=None)


def time_cell(
    study: optuna.Study, sampler: TimedSampler, repeats: int
) -> tuple[float, float, float, float]:
    """(wall, sampler, storage, process CPU) seconds per trial."""
    study.sampler = sampler
    run_trials(study, 1, Objective())  # read the new trials into this storage's cache
    objective = Objective()
    sampler.seconds = 0.0
    start, cpu = time.perf_counter(), time.process_time()
    run_trials(study, repeats, objective)
    wall = (time.perf_counter() - start) / repeats
    cpu = (time.process_time() - cpu) / repeats
    inside = sampler.seconds / repeats
    return wall, inside, wall - inside - objective.eval_s / repeats, cpu


def warm_imports(url: str) -> None:
    """Import what opening ``url`` imports, so that a timed first trial does not pay for it."""
    optuna.storages.RDBStorage("sqlite:///:memory:")
    if url.startswith("postgresql"):
        import psycopg  # noqa: F401
    from optuna.storages.journal import JournalStorage  # noqa: F401


def first_trial(url: str, name: str, path: str, sampler: str) -> float:
    """Seconds a fresh process takes for its first trial (load, ask, suggests, tell)."""
    code = (
        "import sys, time, warnings; sys.path.insert(0, 'benchmarks'); warnings.simplefilter('ignore')\n"
        "import optuna, trial_overhead as b\n"
        "optuna.logging.set_verbosity(optuna.logging.ERROR)\n"
        f"url, name, path, sampler = {url!r}, {name!r}, {path!r}, {sampler!r}\n"
        "sampler = b.make_sampler(sampler, 0, b.N_MODELS, b.N_GROUPS, 10_000)\n"
        "b.warm_imports(url)\n"
        "start = time.perf_counter()\n"
        "storage = b.stock_storage(url) if path == 'stock' else b.ours_storage(url)\n"
        "study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)\n"
        "b.run_trials(study, 1, b.Objective())\n"
        "print(time.perf_counter() - start)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "journal"), default="sqlite")
    parser.add_argument("--checkpoints", default="0,1000,2000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samplers", default="random,evolver,cmaes,tpe")
    parser.add_argument("--first-trial-samplers", default="random,evolver")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    checkpoints = [int(c) for c in args.checkpoints.split(",")]
    names = args.samplers.split(",")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = {
            "sqlite": f"sqlite:///{Path(tmp) / 'overhead.db'}",
            "postgresql": POSTGRES_URL,
            "journal": f"journal:{Path(tmp) / 'overhead.log'}",
        }[args.backend]
        name = f"overhead-{uuid.uuid4().hex[:8]}"
        grower = optuna.create_study(
            study_name=name, storage=ours_storage(url), sampler=EvolverSampler(seed=0)
        )
        for point in initial_points(N_MODELS, N_GROUPS):
            grower.enqueue_trial(point)
        paths = {
            "stock": optuna.load_study(study_name=name, storage=stock_storage(url)),
            "ours": optuna.load_study(study_name=name, storage=ours_storage(url)),
        }
        print(f"D = {len(NAMES)} coefficients, {args.backend}, {args.repeats} trials per cell\n")
        print(
            "| finished | sampler | stock ms/trial | ours ms/trial | stock/ours "
            "| sampler ms (stock, ours) | storage ms (stock, ours) | storage stock/ours "
            "| CPU ms (stock, ours) |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for checkpoint in checkpoints:
            start = time.perf_counter()
            target = max(checkpoint, len(initial_points(N_MODELS, N_GROUPS)))  # no enqueued left
            missing = target - len(grower.get_trials(deepcopy=False, states=FINISHED))
            run_trials(grower, max(0, missing), Objective())
            fill = time.perf_counter() - start
            for sampler_name in names:
                cell = {}
                for path, study in paths.items():
                    sampler = TimedSampler(
                        make_sampler(sampler_name, 0, N_MODELS, N_GROUPS, 10_000)
                    )
                    cell[path] = time_cell(study, sampler, args.repeats)
                (sw, ss, sd, sc), (ow, os_, od, oc) = cell["stock"], cell["ours"]
                n = len(paths["ours"].get_trials(deepcopy=False, states=FINISHED))
                rows.append(
                    {"checkpoint": checkpoint, "trials": n, "sampler": sampler_name, **cell}
                )
                print(
                    f"| {checkpoint} | {sampler_name} | {1e3 * sw:.0f} | {1e3 * ow:.1f} "
                    f"| {sw / ow:.1f} | {1e3 * ss:.1f}, {1e3 * os_:.1f} "
                    f"| {1e3 * sd:.0f}, {1e3 * od:.1f} | {sd / od:.0f} "
                    f"| {1e3 * sc:.0f}, {1e3 * oc:.0f} |",
                    flush=True,
                )
            print(f"<!-- growing to {checkpoint} trials took {fill:.1f} s -->", flush=True)
        n = len(paths["ours"].get_trials(deepcopy=False, states=FINISHED))
        print(f"\nfresh process, first trial at {n} trials (load + ask + 400 suggests + tell):\n")
        print("| sampler | stock s | ours s | stock/ours |")
        print("|---|---|---|---|")
        for sampler_name in args.first_trial_samplers.split(","):
            stock = first_trial(url, name, "stock", sampler_name)
            ours = first_trial(url, name, "ours", sampler_name)
            rows.append({"first_trial": sampler_name, "trials": n, "stock": stock, "ours": ours})
            print(f"| {sampler_name} | {stock:.2f} | {ours:.2f} | {stock / ours:.1f} |", flush=True)
        if args.backend == "postgresql":
            optuna.delete_study(study_name=name, storage=ours_storage(url))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
