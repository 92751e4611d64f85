from __future__ import annotations

from collections import Counter

from evolver_opt.data.parsers import RawExample
from evolver_opt.data.splits import SplitPlan, dedup, split_examples
from tests.data.tiny_data import synthetic_examples


def test_dedup_within_conflicting_and_across():
    seen: set[str] = set()
    first = [
        RawExample("Good  film", "pos"),
        RawExample("good film", "pos"),
        RawExample("x &amp; y", "neg"),
    ]
    kept, report = dedup(first, seen)
    assert [e.text for e in kept] == ["Good film", "x & y"]
    assert report.within == 1
    second = [
        RawExample("GOOD film ", "pos"),
        RawExample("mixed", "pos"),
        RawExample("mixed", "neg"),
        RawExample("new", "neg"),
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


def _shipped(n_train: int, n_dev: int, n_test: int, num_labels: int) -> list[RawExample]:
    rows = synthetic_examples(n_train + n_dev + n_test, 5, num_labels)
    hints = ["train"] * n_train + ["dev"] * n_dev + ["test"] * n_test
    return [RawExample(e.text, e.label, split) for e, split in zip(rows, hints)]


def test_a_shipped_test_split_is_kept_whole_and_dev_comes_from_train_and_dev():
    examples = _shipped(900, 200, 1000, num_labels=5)
    parts = split_examples(examples, "d", SplitPlan(dev_max=150, test_max=100))
    assert sorted(e.text for e in parts["test"]) == sorted(
        e.text for e in examples if e.split == "test"
    )  # whole: test_max does not apply
    assert len(parts["dev"]) == 150 and len(parts["train"]) == 950
    assert {e.split for e in parts["dev"]} == {"train", "dev"}  # drawn from both
    pool = Counter(e.label for e in examples if e.split != "test")
    dev = Counter(e.label for e in parts["dev"])
    assert all(abs(dev[k] - 150 * n / 1100) <= 1 for k, n in pool.items())
    assert parts == split_examples(examples, "d", SplitPlan(dev_max=150, test_max=100))
    assert parts["test"] != [e for e in examples if e.split == "test"]  # stored shuffled


def test_dedup_across_splits_keeps_the_test_copy_and_drops_conflicts():
    examples = [
        RawExample("Where is my card?", "card_arrival", "train"),
        RawExample("where is my  CARD?", "card_arrival", "test"),  # same text, in test too
        RawExample("Top up failed", "top_up_failed", "dev"),
        RawExample("top up failed", "pending_top_up", "test"),  # same text, other label
        RawExample("Is my PIN blocked?", "pin_blocked", "dev"),
        RawExample("is my pin blocked?", "pin_blocked", "train"),
        *[RawExample(f"filler question {i}", "card_arrival", "train") for i in range(20)],
        *[RawExample(f"held out question {i}", "card_arrival", "test") for i in range(5)],
    ]
    kept, report = dedup(examples, set())
    assert (report.raw, report.within, report.conflicting, report.kept) == (31, 3, 1, 27)
    parts = split_examples(kept, "banking77", SplitPlan(dev_fraction=0.2))
    owner = {}
    for name, rows in parts.items():
        for e in rows:
            assert e.text.casefold() not in owner, (e.text, owner.get(e.text.casefold()), name)
            owner[e.text.casefold()] = name
    assert owner["where is my card?"] == "test"  # the train copy went, the test copy stayed
    assert "top up failed" not in owner  # both labels dropped
    assert owner["is my pin blocked?"] in ("train", "dev")
    assert len(parts["test"]) == 6


def test_many_labels_stratify_and_subset():
    """77 labels as in banking77: strata, sizes and subsets still add up."""
    from evolver_opt.data.api import Split

    examples = synthetic_examples(4000, 7, num_labels=77)
    parts = split_examples(examples, "banking77", SplitPlan())
    assert (len(parts["dev"]), len(parts["test"])) == (400, 600)
    assert sum(len(p) for p in parts.values()) == 4000
    overall = Counter(e.label for e in examples)
    for name, rows in parts.items():
        counts = Counter(e.label for e in rows)
        assert set(counts) == set(overall), name  # every label in every split
        for label, n in overall.items():
            assert abs(counts[label] - n * len(rows) / len(examples)) <= 1.0, (name, label)
    names = tuple(sorted(overall))
    dev = Split(
        "banking77",
        "dev",
        tuple(e.text for e in parts["dev"]),
        tuple(names.index(e.label) for e in parts["dev"]),
        names,
    )
    small = dev.subset(50)  # fewer than the labels: the most frequent get one each
    assert len(small) == 50 and len(set(small.labels)) == 50
    big = dev.subset(200)
    assert len(big) == 200
    full = Counter(dev.labels)
    assert all(abs(Counter(big.labels)[k] - n / 2) <= 1 for k, n in full.items())


def test_fingerprint_covers_the_label_list():
    from evolver_opt.data.api import Split

    a = Split("d", "dev", ("x", "y"), (0, 1), ("ham", "spam"))
    assert a.fingerprint != Split("d", "dev", ("x", "y"), (0, 1), ("spam", "ham")).fingerprint
    assert a.fingerprint != Split("d", "dev", ("x", "y"), (0, 1), ("ham", "spam", "x")).fingerprint
    assert a.fingerprint == Split("d", "dev", ("x", "y"), (0, 1), ("ham", "spam")).fingerprint
