"""How fast is evaluation, and how much does exact racing save?

1. Examples per second on the dev splits of a study's domains with the real MiniLM (a zoo
   expert if built, else the base with its seeded head), for three batching modes measured in
   the same run: fixed padding to max_length, dynamic padding in data order, and length
   bucketing with dynamic padding. Tokenization is cached before timing starts.
2. The fraction of forward-pass examples that racing saves on parent/offspring pairs of real
   merged zoo models: each parent is a random task-arithmetic merge of the experts, each
   offspring an Evolver step from it (interpolation towards another individual, F = 0.5, then
   binomial crossover, CR = 0.5, over per-model coefficients); the offspring is raced against
   the parent's dev score (the greedy-selection question "does it beat its parent?").

Usage: python benchmarks/eval_throughput.py [STUDY.toml] [--pairs 12] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evolver_opt.data import load_split
from evolver_opt.evaluation import Evaluator
from evolver_opt.zoo import load_base, load_expert, load_recipe, read_card


def throughput(model, tokenizer, splits, max_length: int, batch_size: int, repeats: int) -> dict:
    """Examples/s per batching mode (best of ``repeats``), all in this process."""
    out = {}
    n = sum(len(s) for s in splits)
    for mode in ("max_length", "dynamic", "bucket"):
        ev = Evaluator(
            model, tokenizer, splits, batch_size=batch_size, max_length=max_length, padding=mode
        )
        for s in splits:
            ev.batches(s.key)  # tokenize and batch before timing
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            score = ev.dev_score().score
            best = min(best, time.perf_counter() - start)
        out[mode] = {"examples_per_s": n / best, "seconds": best, "mean_accuracy": score}
    return out


def merged_state(experts: list[dict], base: dict, coeffs: np.ndarray) -> dict:
    """theta = base + sum_i c_i (theta_i - base), per tensor."""
    state = {}
    for name, b in base.items():
        if not b.is_floating_point():
            state[name] = b
            continue
        delta = sum(float(c) * (e[name] - b) for c, e in zip(coeffs, experts))
        state[name] = b + delta
    return state


def write_in_place(model, state: dict) -> None:
    """Copy weights into the working model's own tensors (no new model)."""
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            tensor.copy_(state[name])


def racing(
    model, tokenizer, splits, experts, base, pairs: int, seed: int, max_length: int, batch_size: int
) -> dict:
    rng = np.random.default_rng(seed)
    k = len(experts)
    ev = Evaluator(model, tokenizer, splits, batch_size=batch_size, max_length=max_length)
    seen = total = accepted = stopped = 0
    rows = []
    t_full = t_raced = 0.0
    for _ in range(pairs):
        parent = rng.dirichlet(np.ones(k))
        reference = rng.dirichlet(np.ones(k)) if rng.random() < 0.5 else np.eye(k)[rng.integers(k)]
        mutant = 0.5 * parent + 0.5 * reference
        mask = rng.random(k) < 0.5
        mask[rng.integers(k)] = True
        child = np.where(mask, mutant, parent)
        write_in_place(model, merged_state(experts, base, parent))
        start = time.perf_counter()
        parent_score = ev.dev_score().score
        t_full += time.perf_counter() - start
        write_in_place(model, merged_state(experts, base, child))
        start = time.perf_counter()
        res = ev.dev_score(stop_below=np.nextafter(parent_score, 2.0))  # must beat, not tie
        t_raced += time.perf_counter() - start
        seen += res.n_seen
        total += res.n_total
        stopped += res.stopped_early
        accepted += (not res.stopped_early) and res.score > parent_score
        rows.append(
            {
                "parent": parent_score,
                "child": res.score,
                "bound": res.best_possible,
                "seen": res.n_seen,
            }
        )
    return {
        "pairs": pairs,
        "examples_seen": seen,
        "examples_total": total,
        "fraction_saved": 1 - seen / total,
        "stopped_early": stopped,
        "accepted": accepted,
        "seconds_full_parent_evals": t_full,
        "seconds_raced_offspring_evals": t_raced,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", default="studies/sentiment-domains.toml")
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    recipe = load_recipe(args.study)
    splits = [load_split(d, "dev") for d in recipe.domains]
    have_zoo = all(read_card(recipe.expert_dir(d)) for d in recipe.domains)
    model, tokenizer = (
        load_expert(recipe.expert_dir(recipe.domains[0])) if have_zoo else load_base(recipe, 2)
    )
    model.eval()
    print(
        f"torch threads: {torch.get_num_threads()}, dev examples: {sum(len(s) for s in splits)}, "
        f"max_length {recipe.max_length}, batch size {args.batch_size}, model: "
        f"{'zoo expert ' + recipe.domains[0] if have_zoo else 'base + seeded head'}"
    )
    result: dict = {
        "throughput": throughput(
            model, tokenizer, splits, recipe.max_length, args.batch_size, args.repeats
        )
    }
    fixed = result["throughput"]["max_length"]["examples_per_s"]
    for mode, row in result["throughput"].items():
        print(
            f"{mode:>10}: {row['examples_per_s']:8.1f} examples/s  ({row['examples_per_s'] / fixed:.2f}x fixed padding)"
        )
    if have_zoo:
        base_model, _ = load_base(recipe, 2)
        base = {k: v.clone() for k, v in base_model.state_dict().items()}
        experts = [load_expert(recipe.expert_dir(d))[0].state_dict() for d in recipe.domains]
        race = racing(
            model,
            tokenizer,
            splits,
            experts,
            base,
            args.pairs,
            args.seed,
            recipe.max_length,
            args.batch_size,
        )
        result["racing"] = race
        print(
            f"racing: {race['pairs']} parent/offspring pairs, {race['stopped_early']} stopped early, "
            f"{race['accepted']} offspring accepted; examples evaluated {race['examples_seen']}"
            f"/{race['examples_total']} -> {race['fraction_saved']:.1%} of forward passes saved"
        )
    else:
        print("racing: skipped (build the zoo first: evolver-opt zoo build STUDY.toml)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
