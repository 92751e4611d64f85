"""What does a merger trial cost next to a coefficient trial? (issue 29, item 1)

On one study (default: the eight-task ``studies/multitask-8.toml`` with a small dev sample),
in one process and one setup, three studies of the same length after their start points:

- ``coefficient``: the coefficient Evolver (``evolver``), the reference trial cost;
- ``merger``: ``evolver-merger:METHOD`` (default ``regmean``) with the incremental path: a
  separable method keeps the sum of the population rows' parts and a trial computes only its
  slot's part (``WeightPopulation.merge_offspring``);
- ``merger-full``: the same study with every row merged on every trial (the path before).

Prints per study the mean offspring trial time (sampler decision, merge and dev evaluation:
``datetime_complete - datetime_start``), the mean ``merge_s`` and ``eval_s``, the merger's
first (population) trial apart (it loads the statistics and builds the parts once), the ratio
merger / coefficient trial time (goal <= 1.5) and the merge-only seconds before and after,
with ``os.getloadavg()`` before and after (the machine may be shared).

Usage:
    python benchmarks/merger_cost.py --dev-per-split 50 --trials 6 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import optuna
import torch


def _offspring_stats(study: optuna.Study, first: int) -> dict:
    """Mean trial, merge and evaluation seconds of trials ``first``.. (finished ones)."""
    trials = [t for t in study.trials[first:] if t.datetime_complete is not None]
    wall = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]
    return {
        "trials": len(trials),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "trial_s": statistics.mean(wall),
        "merge_s": statistics.mean(t.user_attrs.get("merge_s", 0.0) for t in trials),
        "eval_s": statistics.mean(t.user_attrs.get("eval_s", 0.0) for t in trials),
        "values": [t.value for t in trials],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", default="studies/multitask-8.toml")
    parser.add_argument("--method", default="regmean", help="the merger (evolver-merger:METHOD)")
    parser.add_argument("--dev-per-split", type=int, default=50)
    parser.add_argument("--trials", type=int, default=6, help="trials after the start points")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    from evolver_opt.search.config import load_config, override_config
    from evolver_opt.search.element import make_objective
    from evolver_opt.search.objective import build_setup
    from evolver_opt.search.runner import open_study, run_study

    load_before = os.getloadavg()
    print(f"load average before: {load_before}; torch threads {torch.get_num_threads()}")
    config = override_config(
        load_config(args.study), {"dev_per_split": args.dev_per_split}, source="--dev-per-split"
    )
    start = time.perf_counter()
    setup = build_setup(config)
    n_init = len(setup.initial_points())
    print(f"setup {time.perf_counter() - start:.0f} s; precision {setup.precision.used}; "
          f"{n_init} start points; {args.trials} trials after them", flush=True)  # fmt: skip
    merger = f"evolver-merger:{args.method}"
    runs = {"coefficient": ("evolver", False), "merger": (merger, False),
            "merger-full": (merger, True)}  # fmt: skip
    out: dict = {"study": args.study, "dev_per_split": args.dev_per_split,
                 "precision": setup.precision.used, "threads": args.threads}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for label, (sampler, full) in runs.items():
            study = open_study(setup.config, setup.initial_points(), sampler=sampler,
                               seed=args.seed, storage=f"sqlite:///{tmp}/cost.db",
                               study_name=label)  # fmt: skip
            objective = make_objective(setup, sampler)
            if full:
                objective.method.separable = False  # every row merged on every trial
            first = n_init + (sampler != "evolver")  # a merger scores its population first
            start = time.perf_counter()
            run_study(study, objective, n_trials=first + args.trials)
            row = _offspring_stats(study, first)
            row["wall_s"] = time.perf_counter() - start
            if first > n_init:
                pop = study.trials[n_init]
                row["population_trial_s"] = (
                    pop.datetime_complete - pop.datetime_start
                ).total_seconds()
                row["population_merge_s"] = pop.user_attrs.get("merge_s")
            out[label] = row
            print(f"{label:>12} ({sampler}): trial {row['trial_s']:6.2f} s = merge "
                  f"{row['merge_s']:6.3f} s + eval {row['eval_s']:6.2f} s (mean of {row['trials']}, "
                  f"{row['pruned']} lost their race)" + (f"; population trial "
                  f"{row['population_trial_s']:.1f} s (merge {row['population_merge_s']:.1f} s)"
                  if "population_trial_s" in row else ""), flush=True)  # fmt: skip
    coef, inc, full = out["coefficient"], out["merger"], out["merger-full"]
    out["ratio"] = inc["trial_s"] / coef["trial_s"]
    out["ratio_before"] = full["trial_s"] / coef["trial_s"]
    out["same_values"] = inc["values"] == full["values"]
    out["load_average_after"] = os.getloadavg()
    out["load_average_before"] = load_before
    print(
        f"merger / coefficient trial time: {out['ratio']:.2f}x (goal <= 1.5x); "
        f"every row merged: {out['ratio_before']:.2f}x"
    )
    print(
        f"merge only: {full['merge_s']:.3f} s before -> {inc['merge_s']:.3f} s after "
        f"({full['merge_s'] / max(inc['merge_s'], 1e-9):.1f}x); same trial values both ways: "
        f"{out['same_values']}"
    )
    print(f"load average after: {out['load_average_after']}")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
