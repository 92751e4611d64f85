"""Duplicate removal and seeded, stratified train/dev/test splits."""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass

import numpy as np

from evolver_opt.data.clean import clean_text, dedup_key
from evolver_opt.data.parsers import RawExample

SPLIT_NAMES = ("train", "dev", "test")


@dataclass(frozen=True)
class SplitPlan:
    """How a domain is cut: fractions, caps on dev/test size, and the seed."""

    dev_fraction: float = 0.15
    test_fraction: float = 0.15
    dev_max: int = 400
    test_max: int = 800
    seed: int = 0


@dataclass
class DedupReport:
    """What de-duplication dropped in one domain."""

    kept: int = 0
    within: int = 0
    conflicting: int = 0
    across: int = 0


def dedup(examples: list[RawExample], seen: set[str]) -> tuple[list[RawExample], DedupReport]:
    """Clean texts; drop repeats, texts with conflicting labels, and keys already in ``seen``.

    ``seen`` holds the keys of earlier domains and is extended with this domain's keys, so a
    text lands in at most one domain and (since splitting comes after) at most one split.
    """
    report = DedupReport()
    labels_by_key: dict[str, set[int]] = {}
    first: dict[str, RawExample] = {}
    for ex in examples:
        text = clean_text(ex.text)
        if not text:
            continue
        key = dedup_key(text)
        labels_by_key.setdefault(key, set()).add(ex.label)
        if key in first:
            report.within += 1
        else:
            first[key] = RawExample(text, ex.label)
    kept = []
    for key, ex in first.items():
        if len(labels_by_key[key]) > 1:
            report.conflicting += 1
        elif key in seen:
            report.across += 1
        else:
            kept.append(ex)
    seen.update(first)
    report.kept = len(kept)
    return kept, report


def allocate(counts: dict[int, int], total: int) -> dict[int, int]:
    """Split ``total`` across labels proportionally to ``counts`` (largest remainder)."""
    n = sum(counts.values())
    exact = {label: total * c / n for label, c in counts.items()}
    alloc = {label: int(v) for label, v in exact.items()}
    rest = total - sum(alloc.values())
    for label in sorted(exact, key=lambda k: (alloc[k] - exact[k], k))[:rest]:
        alloc[label] += 1
    return alloc


def split_examples(
    examples: list[RawExample], domain: str, plan: SplitPlan
) -> dict[str, list[RawExample]]:
    """Stratified split, seeded by (plan.seed, domain); each split comes back shuffled."""
    n = len(examples)
    n_test = min(round(n * plan.test_fraction), plan.test_max)
    n_dev = min(round(n * plan.dev_fraction), plan.dev_max)
    counts = Counter(ex.label for ex in examples)
    test_alloc, dev_alloc = allocate(counts, n_test), allocate(counts, n_dev)
    rng = np.random.default_rng([plan.seed, zlib.crc32(domain.encode())])
    parts: dict[str, list[RawExample]] = {name: [] for name in SPLIT_NAMES}
    for label in sorted(counts):
        members = [ex for ex in examples if ex.label == label]
        order = rng.permutation(len(members))
        a, b = test_alloc[label], test_alloc[label] + dev_alloc[label]
        parts["test"] += [members[i] for i in order[:a]]
        parts["dev"] += [members[i] for i in order[a:b]]
        parts["train"] += [members[i] for i in order[b:]]
    for name in SPLIT_NAMES:
        parts[name] = [parts[name][i] for i in rng.permutation(len(parts[name]))]
    return parts
