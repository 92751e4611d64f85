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
from evolver_opt.data.pipeline import DOMAINS
from evolver_opt.data.reporting import load_for_report, load_test_split
from evolver_opt.errors import ConfigError, EvolverError, SplitError
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

    shared = [RawExample(f"same text {i}", i % 2) for i in range(20)]
    own = [RawExample(f"imdb only {i}", i % 2) for i in range(20)]
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
    assert ds["text"] == list(split.texts) and ds["label"] == list(split.labels)


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
    """The real sources, when their archives are already in the default cache (no network)."""
    from evolver_opt.paths import data_dir

    cached = data_dir() / "archives"
    if not all((cached / s.filename).exists() for s in sources.SOURCES.values()):
        pytest.skip(f"archives not cached in {cached}; run `evolver-opt data prepare` once")
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
