"""Named splits and the test-split guard: ``train``/``dev`` for fitting and selection only."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from evolver_opt.data import store
from evolver_opt.data.pipeline import DOMAINS, ensure_prepared
from evolver_opt.errors import ConfigError, SplitError

SELECTABLE_SPLITS = ("train", "dev")
REPORT_ONLY_SPLIT = "test"


@dataclass(frozen=True, eq=False)
class Split:
    """One named split of one domain: texts, integer labels and label names.

    ``labels[i]`` indexes ``label_names`` (the domain's label list from the manifest; the files
    store the names).
    """

    domain: str
    name: str
    texts: tuple[str, ...]
    labels: tuple[int, ...]
    label_names: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``domain/split``, the name evaluators and reports use."""
        return f"{self.domain}/{self.name}"

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def __len__(self) -> int:
        return len(self.texts)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the label list, texts and labels (a cache key that changes with the data).

        The label list (names, in id order) is part of it: renaming or reordering the labels
        changes what the integer labels mean, so it changes the fingerprint.
        """
        digest = hashlib.sha256(self.key.encode())
        digest.update(("\x1f".join(self.label_names) + "\n").encode())
        for text, label in zip(self.texts, self.labels):
            digest.update(f"{label}\t{text}\n".encode())
        return digest.hexdigest()

    def subset(self, n: int | None) -> Split:
        """The first ``n`` examples, stratified by label (all of them when ``n`` is None or larger).

        Splits are stored shuffled, so this is a fixed random sample whose label shares match the
        split's (largest remainder); it keeps the stored order. With fewer examples than labels
        (``n=50`` of banking77's 77) only the most frequent labels get one each.
        """
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ConfigError(f"a subset of split {self.key!r} needs n >= 1, got {n}")
        from evolver_opt.data.splits import allocate

        quota = allocate(Counter(self.labels), n)
        keep = []
        for i, label in enumerate(self.labels):
            if quota[label] > 0:
                quota[label] -= 1
                keep.append(i)
        return replace(
            self,
            texts=tuple(self.texts[i] for i in keep),
            labels=tuple(self.labels[i] for i in keep),
            meta={**self.meta, "subset": n},
        )

    def require_selectable(self, purpose: str = "selection") -> None:
        """Raise ``SplitError`` if this split may not drive a choice (it is ``test``)."""
        require_selectable(self, purpose)

    def to_dataset(self) -> Any:
        """This split as a ``datasets.Dataset`` with ``text`` and ``label`` columns."""
        import datasets

        return datasets.Dataset.from_dict({"text": list(self.texts), "label": list(self.labels)})


def require_selectable(split: Split, purpose: str = "selection") -> None:
    """Raise ``SplitError`` when ``split`` is a test split used for ``purpose``."""
    if split.name == REPORT_ONLY_SPLIT:
        raise SplitError(
            f"split {split.key!r} is a test split and may not be used for {purpose}; "
            f"select on 'dev' and read 'test' only for reporting"
        )


def _check_domain(domain: str, data_dir: Path) -> None:
    manifest = store.read_manifest(data_dir) or {}
    known = manifest.get("domains", DOMAINS)
    if domain not in known:
        raise ConfigError(f"unknown domain {domain!r}; expected one of {sorted(known)}")


def manifest_path(data_dir: Path) -> Path:
    return data_dir / store.MANIFEST


def _recorded(info: Any, name: str, manifest: Path) -> dict[str, Any]:
    """The sha256 and size the manifest records for split ``name`` of one domain (``info``)."""
    try:
        sha256, size = info["sha256"][name], info["sizes"][name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"data manifest {manifest} records no sha256 or size of split {name!r}; "
            f"{store.REPREPARE}"
        ) from None
    if not isinstance(sha256, str) or not isinstance(size, int):
        raise ConfigError(
            f"data manifest {manifest}: split {name!r} has sha256 {sha256!r} and size "
            f"{size!r}; expected a hex string and an integer; {store.REPREPARE}"
        )
    return {"sha256": sha256, "size": size}


def read_split(domain: str, name: str, data_dir: Path | None = None) -> Split:
    """Read any split from disk (internal: callers go through the guarded functions)."""
    data_dir = ensure_prepared(data_dir)
    _check_domain(domain, data_dir)
    manifest = store.read_manifest(data_dir)
    path = store.split_path(data_dir, domain, name)
    info = manifest["domains"][domain]
    texts, names = store.read_jsonl(path, **_recorded(info, name, manifest_path(data_dir)))
    index = {label: i for i, label in enumerate(info["labels"])}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise ConfigError(
            f"{path}: labels {unknown[:5]} are not in the manifest's label list for {domain!r}; "
            "the data directory is inconsistent: run `evolver-opt data prepare --force`"
        )
    return Split(
        domain=domain,
        name=name,
        texts=tuple(texts),
        labels=tuple(index[label] for label in names),
        label_names=tuple(info["labels"]),
        meta={
            "path": str(path),
            "sha256": info["sha256"][name],
            "fingerprint": info.get("fingerprint"),
        },
    )


def load_split(domain: str, name: str = "dev", *, data_dir: Path | None = None) -> Split:
    """A ``train`` or ``dev`` split; asking for ``test`` raises ``SplitError``.

    Test splits are read only through :func:`evolver_opt.data.reporting.load_test_split`.
    Data is prepared on first use.
    """
    if name == REPORT_ONLY_SPLIT:
        raise SplitError(
            f"load_split({domain!r}, 'test') refused: the test split is for reporting only; "
            "use evolver_opt.data.reporting.load_test_split() in reporting code"
        )
    if name not in SELECTABLE_SPLITS:
        raise ConfigError(f"unknown split {name!r}; expected one of {SELECTABLE_SPLITS}")
    return read_split(domain, name, data_dir)


def list_domains(data_dir: Path | None = None) -> list[str]:
    """Domains of the prepared data, in de-duplication priority order."""
    manifest = store.read_manifest(ensure_prepared(data_dir))
    return list(manifest["domains"])
