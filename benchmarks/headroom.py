"""Is there headroom for a merge search? The ceiling, the floor and the uniform average.

On a study with separate heads (each task scored with its own expert's head, only the body
merged) this measures, on every in-domain test split and on the dev splits the study selects
on:

- ``expert``: each expert on its own task (the ceiling; one-hot coefficients);
- ``average``: the uniform average of the bodies (``evolver_opt.merge`` method ``average``);
- ``base``: the base body with each task's head (the floor; all coefficients 0).

It prints the table (per task and the mean) and the gap ``expert - average`` in points; the
study is a merge benchmark when that gap is large (issue 17: at least 10 points on the test
mean). Test splits are read through the reporting door only; nothing here is chosen by them.

Usage: python benchmarks/headroom.py [STUDY.toml] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evolver_opt.experiments.rows import TestReporter
from evolver_opt.merge import get_method
from evolver_opt.search.config import load_config
from evolver_opt.search.objective import build_setup


def per_task_scores(setup, reporter, split: str, coefficients_of_task) -> dict[str, float]:
    """Score each task with the body ``coefficients_of_task(task)`` and the task's own head."""
    engine, metric = setup.engine, setup.config.metric
    evaluator = setup.evaluator if split == "dev" else reporter.evaluator
    keys = setup.dev_keys if split == "dev" else list(reporter.evaluator.splits)
    scores, applied = {}, None
    for key in keys:
        task = key.split("/")[0]
        coefficients = coefficients_of_task(task)
        if applied is None or not np.array_equal(applied, coefficients):
            engine.apply(coefficients)
            applied = coefficients
        engine.use_head(task)
        scores[task] = getattr(evaluator.evaluate(key), metric)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", default="studies/multitask-8.toml", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    start = time.perf_counter()
    config = load_config(args.study)
    if config.heads != "separate":
        raise SystemExit(f"{args.study}: this measure is for heads = 'separate' studies")
    setup = build_setup(config)
    reporter = TestReporter(setup)
    engine = setup.engine
    average = get_method("average").coefficients(engine)
    rows = {
        "expert": lambda task: engine.one_hot(task),
        "average": lambda task: average,
        "base": lambda task: np.zeros((engine.n_models, engine.n_groups)),
    }
    result: dict[str, dict[str, dict[str, float]]] = {}
    for name, coefficients_of_task in rows.items():
        result[name] = {}
        for split in ("test", "dev"):
            t = time.perf_counter()
            scores = per_task_scores(setup, reporter, split, coefficients_of_task)
            scores["mean"] = float(np.mean(list(scores.values())))
            result[name][split] = scores
            print(
                f"{name:<8} {split:<4} mean {scores['mean']:.4f} ({time.perf_counter() - t:.0f}s)"
            )
    tasks = [k for k in result["expert"]["test"] if k != "mean"]
    print(f"\n{config.metric} on the test splits (dev in brackets)")
    head = f"{'row':<8}" + "".join(f"{t:>15}" for t in [*tasks, "mean"])
    print(head + "\n" + "-" * len(head))
    for name, by_split in result.items():
        cells = "".join(
            f"{by_split['test'][t]:>8.3f} ({by_split['dev'][t]:.3f})"[-15:].rjust(15)
            for t in [*tasks, "mean"]
        )
        print(f"{name:<8}{cells}")
    gap = {
        s: 100 * (result["expert"][s]["mean"] - result["average"][s]["mean"])
        for s in result["expert"]
    }
    print(f"\nexperts - average: {gap['test']:.1f} points on test, {gap['dev']:.1f} on dev")
    print(f"({time.perf_counter() - start:.0f}s in all)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "study": str(args.study),
            "metric": config.metric,
            "rows": result,
            "gap_points": gap,
        }
        args.out.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
