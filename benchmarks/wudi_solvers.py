"""WUDI's two solvers on a real study: build time, the loss they reach, the dev score.

The paper runs Adam (lr 1e-5, 300 steps) from the sum of the task vectors; the loss is
quadratic, so ``wudi``'s default solves it in closed form (the minimiser gradient flow reaches
from that start). Per solver this prints the seconds to build the merge, the loss of the merged
2-D tensors summed over the model relative to the sum of task vectors (the start), and the dev
score at the paper's scale 1 and at the best scale of wudi's grid; all measured in one run.

    python benchmarks/wudi_solvers.py studies/multitask-8.toml --dev-per-split 200
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from evolver_opt.merge import get_method
from evolver_opt.merge.methods import method_class
from evolver_opt.merge.methods._base import is_matrix, task_vectors
from evolver_opt.merge.methods.wudi import wudi_loss
from evolver_opt.search.config import load_config, override_config
from evolver_opt.search.objective import build_setup, evaluate_dev


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study")
    parser.add_argument("--dev-per-split", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.study)
    config = override_config(
        config,
        {"dev_per_split": args.dev_per_split, "evaluation": {**config.evaluation.model_dump(
            mode="json"), "precision": "fp32"}},
        source="wudi_solvers",
    )  # fmt: skip
    setup = build_setup(config, precision_check=False)
    engine = setup.engine
    print(
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {args.threads} threads"
    )
    scales = [float(p["lambda"]) for p in method_class("wudi").grid]
    for solver in ("closed_form", "adam"):
        start = time.perf_counter()
        name = f"wudi-{solver}"
        engine.add_form(name, get_method("wudi").task_parts(engine, solver=solver))
        seconds = time.perf_counter() - start
        ratio = []
        for slot in engine.slots():
            if is_matrix(slot):
                taus = task_vectors(slot)
                s, e = engine.layout.span(slot.name)
                merged = (engine.forms[name][1:, s:e] - engine.stacked[0, s:e]).sum(0)
                ratio.append(
                    (wudi_loss(merged.view(slot.shape), taus), wudi_loss(taus.sum(0), taus))
                )
        loss, start_loss = map(sum, zip(*ratio))
        devs = {}
        for scale in scales:
            engine.apply(np.full(engine.genome.shape, scale), form=name)
            devs[scale] = float(evaluate_dev(setup).score)
        best = max(devs, key=devs.__getitem__)
        print(
            f"{solver:<12} build {seconds:7.1f} s  loss/start {loss / start_loss:.4f}  "
            f"dev at 1.0 {devs.get(1.0, float('nan')):.4f}  best dev {devs[best]:.4f} (lambda {best})"
        )
        engine.drop_form(name)


if __name__ == "__main__":
    main()
