"""The on-disk format: ``DIR/<domain>/<split>.jsonl`` plus ``DIR/manifest.json``.

Each JSON Lines row is ``{"text": str, "label": str}`` (the label's name). The manifest records
the sources and their checksums, the split plan, and per domain its label list (whose order
gives the integer ids :class:`evolver_opt.data.Split` uses), split sizes, the sha256 of each
split file and a ``fingerprint`` over the label list and those files. The manifest is written
last and removed first when a preparation starts, so a directory with a manifest is complete.
A split file is checked against the manifest when it is read (its sha256 and row count), and a
manifest or a split file that does not parse is a ``ConfigError`` naming the file.
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
from evolver_opt.errors import ConfigError

FORMAT_VERSION = 2  # 2: labels stored as names; fingerprint per domain
MANIFEST = "manifest.json"
REPREPARE = "run `evolver-opt data prepare --force` to prepare the data again"


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


def read_jsonl(
    path: Path, *, sha256: str | None = None, size: int | None = None
) -> tuple[list[str], list[str]]:
    """Texts and label names of one split file; with ``sha256`` and ``size`` (the manifest's),
    a file changed or cut since it was prepared is a ``ConfigError`` naming it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        message = f"cannot read prepared data file {path} ({exc.strerror}); {REPREPARE}"
        raise ConfigError(message) from None
    if sha256 is not None and (actual := hashlib.sha256(data).hexdigest()) != sha256:
        raise ConfigError(
            f"prepared data file {path} does not match the manifest (sha256 {actual[:12]}..., "
            f"expected {sha256[:12]}...): it was changed or cut after preparation; {REPREPARE}"
        )
    texts, labels = _parse_jsonl(path, data)
    if size is not None and len(texts) != size:
        raise ConfigError(
            f"prepared data file {path} holds {len(texts)} examples; the manifest says {size}: "
            f"it was changed or cut after preparation; {REPREPARE}"
        )
    return texts, labels


def _parse_jsonl(path: Path, data: bytes) -> tuple[list[str], list[str]]:
    """The ``text`` and ``label`` of each row of ``data`` (the bytes of ``path``)."""
    texts, labels = [], []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise ConfigError(
                f"prepared data file {path}, line {number}: not a JSON row ({exc}); {REPREPARE}"
            ) from None
        if not (isinstance(row, dict) and isinstance(row.get("text"), str) and "label" in row):
            raise ConfigError(
                f'prepared data file {path}, line {number}: expected {{"text": str, "label": '
                f"...}}, got {str(row)[:80]!r}; {REPREPARE}"
            )
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
    try:
        manifest = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"data manifest {path} cannot be read ({exc}); {REPREPARE}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("domains", {}), dict):
        raise ConfigError(f"data manifest {path} is not a manifest object; {REPREPARE}")
    return manifest
