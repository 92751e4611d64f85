"""One sampler's best-by-dev models against one reference row (a static merge) of a compare.

The compare report pairs each sampler with the best other *sampler*; this pairs a sampler's
seeds with a fixed reference row (e.g. the static RegMean merge) from the same results.json:
per seed the test-mean difference and a paired bootstrap over the test examples
(``statistics.paired_bootstrap``, the same examples for both), and over seeds the Wilcoxon
signed-rank test (exact; with 5 seeds its smallest two-sided p is 0.0625) and the paired
t-test of the differences.

    python benchmarks/versus_reference.py benchmarks/results/2026-12-01-multitask-8/results.json \\
        --sampler evolver-merger:regmean --reference regmean
"""

from __future__ import annotations

import argparse
import ast
import json

import numpy as np
from scipy import stats

from evolver_opt.reports.statistics import paired_bootstrap, t_interval, wilcoxon_paired


def correct_by_split(row: dict, tasks: list[str]) -> list[list[float]]:
    """A row's per-example 1/0 scores, split by split in ``tasks`` order."""
    raw = row["test_correct"]
    table = ast.literal_eval(raw) if isinstance(raw, str) else raw
    return [[float(c) for c in table[t]] for t in tasks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--sampler", required=True)
    parser.add_argument("--reference", required=True, help="a static or expert row's name")
    args = parser.parse_args()
    with open(args.results) as f:
        rows = json.load(f)["rows"]
    reference = next(r for r in rows if r["kind"] != "sampler" and r["name"] == args.reference)
    tasks = list(reference["test_in_domain"])
    seeds = sorted(
        (r for r in rows if r["kind"] == "sampler" and r["name"] == args.sampler),
        key=lambda r: r["seed"],
    )
    ref_correct = correct_by_split(reference, tasks)
    print(f"{args.sampler} (best by dev) vs {args.reference} ({reference['test_in']:.4f} test)")
    print("| seed | test mean | difference | bootstrap 95% CI | bootstrap p |")
    print("|---|---|---|---|---|")
    diffs = []
    for row in seeds:
        boot = paired_bootstrap(correct_by_split(row, tasks), ref_correct)
        diffs.append(row["test_in"] - reference["test_in"])
        print(f"| {row['seed']} | {row['test_in']:.4f} | {diffs[-1]:+.4f} | "
              f"[{boot.low:+.4f}, {boot.high:+.4f}] | {boot.p_value:.4f} |")  # fmt: skip
    mean = t_interval(diffs)
    wilcoxon = wilcoxon_paired([r["test_in"] for r in seeds], [reference["test_in"]] * len(seeds))
    t = stats.ttest_1samp(np.asarray(diffs), 0.0)
    print(f"\nmean difference {mean.mean:+.4f}, 95% CI [{mean.low:+.4f}, {mean.high:+.4f}] "
          f"over {len(diffs)} seeds; Wilcoxon p = {wilcoxon.p_value:.4f} (min possible "
          f"{wilcoxon.min_p:.4f}); paired t p = {float(t.pvalue):.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
