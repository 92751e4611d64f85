"""Does Evolver find good merge coefficients? A synthetic suite that looks like merge search.

Problems: ``evolver_opt.experiments.synthetic`` (``merge``, ``sphere``, ``rastrigin``).
Every sampler starts from the same enqueued points (each model alone, the uniform average) and
gets the same budget; the table is the median best value over seeds at each budget.

    python benchmarks/synthetic_suite.py --groups 1,25,100 --seeds 5 --budgets 50,100,200
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
from samplers import SAMPLERS, initial_points, make_sampler

from evolver_opt.experiments import synthetic


def run_one(
    sampler_name: str, kind: str, n_models: int, n_groups: int, seed: int, budget: int
) -> list[float]:
    sampler = make_sampler(sampler_name, seed, n_models, n_groups, budget)
    study = optuna.create_study(sampler=sampler)
    for point in initial_points(n_models, n_groups):
        study.enqueue_trial(point)
    study.optimize(synthetic.objective(kind, n_models, n_groups), n_trials=budget)
    values = [t.value if t.value is not None else np.inf for t in study.trials]
    return np.minimum.accumulate(values).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--groups", default="1,25,100")
    parser.add_argument("--objectives", default="merge,sphere,rastrigin")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budgets", default="50,100,200")
    parser.add_argument("--out", default="benchmarks/out/synthetic")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")  # scipy/cma chatter inside Nevergrad's optimizers
    budgets = [int(b) for b in args.budgets.split(",")]
    samplers = args.samplers.split(",")
    results: dict[str, dict] = {}
    for kind in args.objectives.split(","):
        for n_groups in (int(g) for g in args.groups.split(",")):
            key = f"{kind}/N={args.models}/G={n_groups}"
            results[key] = {}
            for name in samplers:
                start = time.perf_counter()
                curves = [
                    run_one(name, kind, args.models, n_groups, s, max(budgets))
                    for s in range(args.seeds)
                ]
                results[key][name] = {"curves": curves, "seconds": time.perf_counter() - start}
            print_table(key, results[key], budgets)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"budgets": budgets, "results": results}))
    plot(results, out / "synthetic.png")
    print(f"wrote {out / 'results.json'} and {out / 'synthetic.png'}")


def print_table(key: str, rows: dict, budgets: list[int]) -> None:
    print(f"\n### {key}: median best value over seeds (lower is better)\n")
    print("| sampler | " + " | ".join(f"{b} trials" for b in budgets) + " | rank@max | seconds |")
    print("|---" * (len(budgets) + 3) + "|")
    finals = {name: np.median([c[-1] for c in r["curves"]]) for name, r in rows.items()}
    order = sorted(finals, key=finals.get)
    for name, r in rows.items():
        cells = [f"{np.median([c[b - 1] for c in r['curves']]):.4g}" for b in budgets]
        print(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {order.index(name) + 1} | {r['seconds']:.1f} |"
        )


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(results)
    cols = min(3, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for name, r in results[key].items():
            curves = np.array(r["curves"])
            x = np.arange(1, curves.shape[1] + 1)
            ax.plot(x, np.median(curves, axis=0), label=name)
            ax.fill_between(
                x, np.quantile(curves, 0.25, axis=0), np.quantile(curves, 0.75, axis=0), alpha=0.15
            )
        ax.set_title(key, fontsize=9)
        ax.set_yscale("log")
        ax.set_xlabel("trials")
        ax.set_ylabel("best loss")
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
