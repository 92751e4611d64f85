"""Prepared split files are checked against the manifest when read (issue 27, item 3): a file
cut or changed after preparation, or a damaged manifest, is a ConfigError naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from evolver_opt.data import load_split, store
from evolver_opt.data.reporting import load_test_split
from evolver_opt.errors import ConfigError
from tests.data.tiny_data import write_tiny_data

DOMAIN = "vader-tweets"


@pytest.fixture
def tiny_dir(tmp_path) -> Path:
    write_tiny_data(tmp_path / "data")
    return tmp_path / "data"


def _cut_at_a_line(path: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[: len(lines) // 2]))


def _cut_mid_line(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 3])


def _edit_a_text(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    edited = lines[0].replace('"text": "', '"text": "edited ', 1)
    assert edited != lines[0]
    path.write_text("".join([edited, *lines[1:]]))


@pytest.mark.parametrize("damage", [_cut_at_a_line, _cut_mid_line, _edit_a_text])
def test_a_split_file_changed_after_preparation_is_refused_naming_it(tiny_dir, damage):
    path = store.split_path(tiny_dir, DOMAIN, "dev")
    whole = len(load_split(DOMAIN, "dev", data_dir=tiny_dir))
    damage(path)
    with pytest.raises(ConfigError, match=rf"{path}.*does not match the manifest.*--force"):
        load_split(DOMAIN, "dev", data_dir=tiny_dir)
    assert whole > 0


def test_a_test_split_is_checked_too(tiny_dir):
    path = store.split_path(tiny_dir, DOMAIN, "test")
    _cut_at_a_line(path)
    with pytest.raises(ConfigError, match=rf"{path}.*does not match the manifest"):
        load_test_split(DOMAIN, data_dir=tiny_dir)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"text": "a", "label": "1"}\n{"text": "b", "lab', "line 2: not a JSON row"),
        (b'{"text": "a", "label": "1"}\n[1, 2]\n', 'line 2: expected {"text"'),
        (b'{"text": "\xff", "label": "1"}\n', "line 1: not a JSON row"),
    ],
)
def test_a_split_file_that_does_not_parse_names_the_file_and_line(tmp_path, body, problem):
    path = tmp_path / "dev.jsonl"
    path.write_bytes(body)
    with pytest.raises(ConfigError, match=rf"{path}, {problem}"):
        store.read_jsonl(path)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", ""])
def test_a_damaged_manifest_is_refused_naming_it(tiny_dir, text):
    manifest = tiny_dir / store.MANIFEST
    manifest.write_text(text)
    with pytest.raises(ConfigError, match=rf"data manifest {manifest} .*--force"):
        load_split(DOMAIN, "dev", data_dir=tiny_dir)


def test_untouched_files_load(tiny_dir):
    dev = load_split(DOMAIN, "dev", data_dir=tiny_dir)
    sizes = store.read_manifest(tiny_dir)["domains"][DOMAIN]["sizes"]
    assert len(dev) == sizes["dev"]
