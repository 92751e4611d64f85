from __future__ import annotations

from collections import Counter

from evolver_opt.data.parsers import RawExample
from evolver_opt.data.splits import SplitPlan, dedup, split_examples
from tests.data.tiny_data import synthetic_examples


def test_dedup_within_conflicting_and_across():
    seen: set[str] = set()
    first = [RawExample("Good  film", 1), RawExample("good film", 1), RawExample("x &amp; y", 0)]
    kept, report = dedup(first, seen)
    assert [e.text for e in kept] == ["Good film", "x & y"]
    assert report.within == 1
    second = [
        RawExample("GOOD film ", 1),
        RawExample("mixed", 1),
        RawExample("mixed", 0),
        RawExample("new", 0),
    ]
    kept, report = dedup(second, seen)
    assert [e.text for e in kept] == ["new"]
    assert (report.across, report.conflicting, report.kept) == (1, 1, 1)


def test_split_is_a_stratified_partition():
    examples = synthetic_examples(400, seed=1, num_labels=3)
    parts = split_examples(examples, "d", SplitPlan(dev_fraction=0.2, test_fraction=0.1))
    texts = [e.text for name in ("train", "dev", "test") for e in parts[name]]
    assert sorted(texts) == sorted(e.text for e in examples)  # disjoint and complete
    assert (len(parts["dev"]), len(parts["test"])) == (80, 40)
    overall = Counter(e.label for e in examples)
    for name, rows in parts.items():
        counts = Counter(e.label for e in rows)
        for label, n in overall.items():
            assert abs(counts[label] - n * len(rows) / len(examples)) <= 1.0, (name, label)


def test_split_caps_sizes():
    parts = split_examples(synthetic_examples(300, 2), "d", SplitPlan(dev_max=10, test_max=20))
    assert (len(parts["dev"]), len(parts["test"]), len(parts["train"])) == (10, 20, 270)


def test_split_is_seeded_per_seed_and_domain():
    examples = synthetic_examples(200, 3)
    a = split_examples(examples, "d", SplitPlan(seed=0))
    assert a == split_examples(examples, "d", SplitPlan(seed=0))
    assert a["dev"] != split_examples(examples, "d", SplitPlan(seed=1))["dev"]
    assert a["dev"] != split_examples(examples, "e", SplitPlan(seed=0))["dev"]


def test_subset_is_a_stratified_prefix_and_changes_the_fingerprint():
    from evolver_opt.data.api import Split

    labels = (0, 0, 1, 0, 2, 1, 0, 0, 1, 2, 0, 1)  # 6 x 0, 4 x 1, 2 x 2
    split = Split("d", "dev", tuple(f"t{i}" for i in range(12)), labels, ("a", "b", "c"))
    half = split.subset(6)
    assert Counter(half.labels) == {0: 3, 1: 2, 2: 1}
    assert half.texts == ("t0", "t1", "t2", "t3", "t4", "t5")  # the first of each label, in order
    assert Counter(split.subset(3).labels) == {0: 2, 1: 1}  # largest remainder
    assert half.fingerprint != split.fingerprint
    assert split.subset(None) is split and split.subset(12) is split
