"""The on-disk format: ``DIR/<domain>/<split>.jsonl`` plus ``DIR/manifest.json``.

Each JSON Lines row is ``{"text": str, "label": int}``; the manifest records the sources and
their checksums, the split plan, label names, split sizes and a content fingerprint per domain.
``datasets.load_dataset("json", data_files=...)`` reads the files directly.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from evolver_opt.data.parsers import RawExample

FORMAT_VERSION = 1
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


def read_jsonl(path: Path) -> tuple[list[str], list[int]]:
    """Texts and labels of one split file."""
    texts, labels = [], []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                texts.append(row["text"])
                labels.append(int(row["label"]))
    return texts, labels


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
