"""Duplicate removal and seeded, stratified train/dev/test splits."""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Hashable, Mapping
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
    """What de-duplication dropped in one domain: ``raw`` rows in, ``kept`` out."""

    kept: int = 0
    within: int = 0
    conflicting: int = 0
    across: int = 0
    empty: int = 0
    raw: int = 0


def dedup(examples: list[RawExample], seen: set[str]) -> tuple[list[RawExample], DedupReport]:
    """Clean texts; drop repeats, texts with conflicting labels, and keys already in ``seen``.

    ``seen`` holds the keys of earlier domains and is extended with this domain's keys, so a
    text lands in at most one domain and (since splitting comes after) at most one split.
    Of repeats with one label the first is kept, except that a copy the source put in its
    ``test`` split wins (so a source's test split stays as whole as it can).
    ``within`` counts extra copies, ``conflicting`` the texts whose copies disagree on the label
    (their remaining copy is dropped too), ``empty`` the rows with no text left after cleaning:
    ``raw == kept + empty + within + conflicting + across``.
    """
    report = DedupReport(raw=len(examples))
    labels_by_key: dict[str, set[str]] = {}
    first: dict[str, RawExample] = {}
    for ex in examples:
        text = clean_text(ex.text)
        if not text:
            report.empty += 1
            continue
        key = dedup_key(text)
        labels_by_key.setdefault(key, set()).add(ex.label)
        if key in first:
            report.within += 1
            if ex.split == "test" and first[key].split != "test":
                first[key] = RawExample(first[key].text, first[key].label, "test")
        else:
            first[key] = RawExample(text, ex.label, ex.split)
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


def allocate(counts: Mapping[Hashable, int], total: int) -> dict[Hashable, int]:
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
    """Stratified split, seeded by (plan.seed, domain); each split comes back shuffled.

    When the source ships its own test split (examples with ``split == "test"``), that is the
    test split, whole (``test_fraction``/``test_max`` do not apply); dev is drawn stratified
    from all the other examples (the source's train and dev together) with ``dev_fraction``
    and ``dev_max``, and the rest is train.
    """
    if any(ex.split == "test" for ex in examples):
        return _split_keeping_test(examples, domain, plan)
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


def _split_keeping_test(
    examples: list[RawExample], domain: str, plan: SplitPlan
) -> dict[str, list[RawExample]]:
    test = [ex for ex in examples if ex.split == "test"]
    pool = [ex for ex in examples if ex.split != "test"]
    n_dev = min(round(len(pool) * plan.dev_fraction), plan.dev_max)
    counts = Counter(ex.label for ex in pool)
    dev_alloc = allocate(counts, n_dev) if pool else {}
    rng = np.random.default_rng([plan.seed, zlib.crc32(domain.encode())])
    parts: dict[str, list[RawExample]] = {"train": [], "dev": [], "test": test}
    for label in sorted(counts):
        members = [ex for ex in pool if ex.label == label]
        order = rng.permutation(len(members))
        parts["dev"] += [members[i] for i in order[: dev_alloc[label]]]
        parts["train"] += [members[i] for i in order[dev_alloc[label] :]]
    for name in SPLIT_NAMES:
        parts[name] = [parts[name][i] for i in rng.permutation(len(parts[name]))]
    return parts
