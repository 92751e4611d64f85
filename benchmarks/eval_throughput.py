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

3. Precision and the physical limit (``--precision``): examples per second of the same model
   in float32 and in bfloat16 on the same batches (their argmax agreement too), and the
   machine's own float32 and bfloat16 matmul rate on the model's linear-layer shapes at the
   batches' token counts: the fraction of that rate each precision reaches over the linear
   layers' FLOPs (1.0 = every second spent at the matmul peak; attention, norms and Python
   are the rest).
4. Trials per hour (``--trials N``): the study file's search run for N trials per sampler in a
   temporary SQLite file, before (float32, no racing, no pruner) and after (``auto``
   precision, racing, the median pruner in stages), with the same seeds; prints trials/hour,
   the ratio, and whether both selected the same model.

Usage: python benchmarks/eval_throughput.py [STUDY.toml] [--pairs 12] [--out result.json]
       python benchmarks/eval_throughput.py studies/multitask-8.toml --precision --pairs 0 \
           --trials 20 --dev-per-split 50
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


def _linear_shapes(model) -> list[tuple[int, int]]:
    return [
        (m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)
    ]


def _matmul_rate(shapes, tokens: int, dtype, repeats: int = 5) -> float:
    """FLOP/s of ``x @ W.T`` over the model's linear shapes at ``tokens`` rows (best of)."""
    gen = torch.Generator().manual_seed(0)
    pairs = [
        (
            torch.randn(tokens, i, generator=gen).to(dtype),
            torch.randn(o, i, generator=gen).to(dtype),
        )
        for i, o in sorted(set(shapes))
    ]
    counts = {s: shapes.count(s) for s in set(shapes)}
    flops = sum(2 * tokens * i * o * counts[(i, o)] for i, o in counts)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            for (x, w), (i, o) in zip(pairs, sorted(set(shapes))):
                for _ in range(counts[(i, o)]):
                    x @ w.T
            best = min(best, time.perf_counter() - start)
    return flops / best


def precision_and_limit(
    model, tokenizer, splits, max_length: int, batch_size: int, repeats: int
) -> dict:
    """fp32 and bf16 examples/s on the same batches, agreement, and the matmul limit."""
    import copy

    from evolver_opt.evaluation.precision import agreement

    n = sum(len(s) for s in splits)
    low = copy.deepcopy(model).to(torch.bfloat16)
    out: dict = {}
    preds = {}
    for name, m in (("fp32", model), ("bf16", low)):
        ev = Evaluator(m, tokenizer, splits, batch_size=batch_size, max_length=max_length)
        best = float("inf")
        for _ in range(repeats + 1):  # the first pass warms oneDNN's kernels up
            start = time.perf_counter()
            ev.dev_score()
            best = min(best, time.perf_counter() - start)
        preds[name] = [ev.predictions(s.key) for s in splits]
        batches = [b for s in splits for b in ev.batches(s.key)]
        tokens = [b.input_ids.numel() for b in batches]
        out[name] = {"examples_per_s": n / best, "seconds": best}
    shapes = _linear_shapes(model)
    per_token = sum(2 * i * o for i, o in shapes)
    total_flops = per_token * sum(tokens)
    typical = int(np.median(tokens))
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        rate = _matmul_rate(shapes, typical, dtype)
        out[name]["matmul_GFLOPs"] = rate / 1e9
        out[name]["linear_GFLOPs_achieved"] = total_flops / out[name]["seconds"] / 1e9
        out[name]["fraction_of_matmul_limit"] = total_flops / rate / out[name]["seconds"]
    out["bf16_over_fp32"] = out["bf16"]["examples_per_s"] / out["fp32"]["examples_per_s"]
    out["agreement"] = agreement(preds["fp32"], preds["bf16"])
    out["tokens_per_batch_median"] = typical
    return out


def trials_per_hour(
    study_file: str, samplers: list[str], n_trials: int, dev_per_split: int | None
) -> dict:
    """Trials/hour of the study's search before and after the CPU evaluation work."""
    import tempfile

    from evolver_opt.search.config import load_config, override_config
    from evolver_opt.search.element import make_objective
    from evolver_opt.search.objective import build_setup
    from evolver_opt.search.runner import open_study, run_study

    config = load_config(study_file)
    if dev_per_split:
        config = override_config(config, {"dev_per_split": dev_per_split}, source="--dev-per-split")
    settings = {
        "before": {"racing": False, "evaluation": {**config.evaluation.model_dump(), "precision": "fp32"},
                   "pruner": {"name": "none"}},
        "after": {"racing": True, "evaluation": {**config.evaluation.model_dump(), "precision": "auto"},
                  "pruner": {"name": "median", "options": {"n_startup_trials": 3}}},
    }  # fmt: skip
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/rate.db"
        for label, changes in settings.items():
            setup = build_setup(override_config(config, changes, source=label))
            out[label] = {"precision": setup.precision.as_json()}
            for sampler in samplers:
                study = open_study(setup.config, setup.initial_points(), sampler=sampler, seed=0,
                                   storage=storage, study_name=f"{label}-{sampler}")  # fmt: skip
                start = time.perf_counter()
                run_study(study, make_objective(setup, sampler), n_trials=n_trials)
                wall = time.perf_counter() - start
                trials = study.trials
                states = [t.state.name for t in trials]
                out[label][sampler] = {
                    "wall_s": wall,
                    "trials_per_hour": 3600 * len(trials) / wall,
                    "best_trial": study.best_trial.number,
                    "best_params": study.best_trial.params,
                    "best_dev": study.best_trial.value,
                    "pruned": states.count("PRUNED"),
                    "examples_seen": sum(t.user_attrs.get("examples_seen", 0) for t in trials),
                }
                print(f"{label:>6} {sampler:>10}: {len(trials)} trials in {wall:6.1f} s = "
                      f"{out[label][sampler]['trials_per_hour']:7.0f} trials/hour, best dev "
                      f"{study.best_trial.value:.4f} (trial {study.best_trial.number}), "
                      f"{states.count('PRUNED')} pruned", flush=True)  # fmt: skip
    for sampler in samplers:
        b, a = out["before"][sampler], out["after"][sampler]
        out[sampler] = {
            "speedup": a["trials_per_hour"] / b["trials_per_hour"],
            "same_selected_model": a["best_params"] == b["best_params"],
        }
        print(f"{sampler}: {out[sampler]['speedup']:.2f}x trials/hour; same selected model: "
              f"{out[sampler]['same_selected_model']}")  # fmt: skip
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
    parser.add_argument(
        "--precision", action="store_true", help="fp32 vs bf16 and the matmul limit"
    )
    parser.add_argument("--dev-per-split", type=int, default=None)
    parser.add_argument("--trials", type=int, default=0, help="trials per sampler for trials/hour")
    parser.add_argument("--samplers", default="random,evolver")
    args = parser.parse_args()
    recipe = load_recipe(args.study)
    splits = [load_split(d, "dev").subset(args.dev_per_split) for d in recipe.domains]
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
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}", flush=True)
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
    if args.precision:
        p = precision_and_limit(
            model, tokenizer, splits, recipe.max_length, args.batch_size, args.repeats
        )
        result["precision"] = p
        for name in ("fp32", "bf16"):
            r = p[name]
            print(f"{name}: {r['examples_per_s']:8.1f} examples/s; matmul limit "
                  f"{r['matmul_GFLOPs']:.0f} GFLOP/s, linear layers at "
                  f"{r['linear_GFLOPs_achieved']:.0f} GFLOP/s = "
                  f"{r['fraction_of_matmul_limit']:.2f} of it")  # fmt: skip
        print(f"bf16/fp32: {p['bf16_over_fp32']:.2f}x examples/s; argmax agreement "
              f"{p['agreement']:.4f} (median batch {p['tokens_per_batch_median']} tokens)")  # fmt: skip
    if args.trials:
        result["trials"] = trials_per_hour(
            args.study, args.samplers.split(","), args.trials, args.dev_per_split
        )
    if have_zoo and args.pairs:
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
    elif args.pairs:
        print("racing: skipped (build the zoo first: evolver-opt zoo build STUDY.toml)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
