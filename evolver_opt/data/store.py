"""The on-disk format: ``DIR/<domain>/<split>.jsonl`` plus ``DIR/manifest.json``.

Each JSON Lines row is ``{"text": str, "label": str}`` (the label's name). The manifest records
the sources and their checksums, the split plan, and per domain its label list (whose order
gives the integer ids :class:`evolver_opt.data.Split` uses), split sizes, the sha256 of each
split file and a ``fingerprint`` over the label list and those files. The manifest is written
last and removed first when a preparation starts, so a directory with a manifest is complete.
``datasets.load_dataset("json", data_files=...)`` reads the files directly (``label`` is a
string column; ``ClassLabel(names=manifest labels)`` maps it to ids).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from evolver_opt.data.parsers import RawExample

FORMAT_VERSION = 2  # 2: labels stored as names; fingerprint per domain
MANIFEST = "manifest.json"


def split_path(data_dir: Path, domain: str, split: str) -> Path:
    """Path of one split's JSON Lines file."""
    return data_dir / domain / f"{split}.jsonl"


def write_jsonl(path: Path, examples: list[RawExample]) -> str:
    """Write examples atomically; return the sha256 of the bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"text": ex.text, "label": ex.label}, ensure_ascii=False) for ex in examples
    ]
    data = ("\n".join(lines) + "\n").encode() if lines else b""
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def read_jsonl(path: Path) -> tuple[list[str], list[str]]:
    """Texts and label names of one split file."""
    texts, labels = [], []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                texts.append(row["text"])
                labels.append(str(row["label"]))
    return texts, labels


def domain_fingerprint(labels: list[str] | tuple[str, ...], split_sha256: dict[str, str]) -> str:
    """sha256 over a domain's label list (in order) and its split files' sha256."""
    payload = {"labels": list(labels), "splits": dict(sorted(split_sha256.items()))}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def remove_manifest(data_dir: Path) -> None:
    """Mark ``data_dir`` as not (completely) prepared, before its files are rewritten."""
    (data_dir / MANIFEST).unlink(missing_ok=True)


def write_manifest(data_dir: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest last: its presence marks a complete preparation."""
    tmp = data_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, data_dir / MANIFEST)


def read_manifest(data_dir: Path) -> dict[str, Any] | None:
    """The manifest, or None when the directory is not (completely) prepared."""
    path = data_dir / MANIFEST
    if not path.exists():
        return None
    return json.loads(path.read_text())
