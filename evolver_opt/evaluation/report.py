"""Reporting helpers: per-domain tables (the zoo's expert matrix is ``evolver_opt.zoo.matrix``).

This is reporting code: it may read test splits, and it never chooses anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evolver_opt.data import Split, load_split
from evolver_opt.data.reporting import load_test_split
from evolver_opt.evaluation.evaluator import EvalResult, Evaluator


def report_splits(domains: Sequence[str], split: str) -> list[Split]:
    """The named split of each domain (``test`` through the reporting door)."""
    if split == "test":
        return [load_test_split(d) for d in domains]
    return [load_split(d, split) for d in domains]


def evaluate_domains(
    model: Any, tokenizer: Any, domains: Sequence[str], split: str, **kwargs: Any
) -> dict[str, EvalResult]:
    """Full (unraced) evaluation with accuracy and macro-F1 on each domain's split."""
    splits = report_splits(domains, split)
    ev = Evaluator(model, tokenizer, splits, **kwargs)
    return {s.domain: ev.evaluate(s.key, metric="macro_f1") for s in splits}


def format_table(results: dict[str, EvalResult]) -> str:
    """Domain, n, accuracy, macro-F1, with the mean over domains."""
    lines = [f"{'domain':<14} {'n':>5} {'accuracy':>9} {'macro_f1':>9}", "-" * 40]
    for domain, r in results.items():
        lines.append(f"{domain:<14} {r.n_total:>5} {r.accuracy:>9.4f} {r.macro_f1:>9.4f}")
    n = len(results)
    mean_acc = sum(r.accuracy for r in results.values()) / n
    mean_f1 = sum(r.macro_f1 for r in results.values()) / n
    lines += ["-" * 40, f"{'mean':<14} {'':>5} {mean_acc:>9.4f} {mean_f1:>9.4f}"]
    return "\n".join(lines)
