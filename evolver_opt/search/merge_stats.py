"""Per-expert statistics of the data-dependent merges (Fisher, RegMean), cached on disk.

Each expert's statistics come from a fixed sample of its own TRAINING split (the first ``n``
examples of the stored, shuffled split, stratified: ``Split.subset``), with its own head when
heads are kept separate. They are computed in float32 (Gram matrices accumulated in float64)
and saved with safetensors in ``<expert dir>/merge-stats/<kind>-<key>.safetensors`` (a
sub-folder, so the checkpoint reader's ``*.safetensors`` never sees them; rebuilding the
expert removes them with its folder). An expert folder that cannot be written keeps them in
``cache_dir()/merge-stats/`` instead. ``key`` hashes the kind, the sample (size, fingerprint),
max length, batch size, the tokenizer, the merged tensors' names and the expert's own files
(name, size, modification time), so a second call with the same settings loads the file.

A cached file is checked before it is used: its stored key (another expert's file copied under
this name is refused), its tensor names, shapes and dtypes, finiteness, and non-negative Fisher
values and Gram diagonals. A file that fails is recomputed with one :class:`StatsCacheWarning`
naming it; files are written under a unique temporary name, then renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load, save_file

from evolver_opt.errors import ConfigError
from evolver_opt.merge.methods.fisher import expert_fisher
from evolver_opt.merge.methods.regmean import expert_grams, linear_layers
from evolver_opt.paths import cache_dir

STATS_DIR = "merge-stats"
FORMAT = 1
KINDS = ("fisher", "regmean")
DTYPES = {"fisher": torch.float32, "regmean": torch.float64}  # as compute_stats makes them
_UNREADABLE = (SafetensorError, OSError, ValueError, RuntimeError, UnicodeDecodeError)


class StatsCacheWarning(UserWarning):
    """A cached statistics file was unusable and is being recomputed."""


@dataclass(frozen=True)
class StatsSpec:
    """What the statistics are computed on: ``n_examples`` of each expert's training split,
    truncated to ``max_length`` tokens, in batches of ``batch_size`` (RegMean; Fisher takes
    one example at a time, unpadded)."""

    n_examples: int = 256
    max_length: int = 128
    batch_size: int = 64

    def as_json(self) -> dict[str, int]:
        return {"examples": self.n_examples, "max_length": self.max_length,
                "batch_size": self.batch_size}  # fmt: skip


def spec_for(setup: Any, n_examples: int = 256) -> StatsSpec:
    """The setup's max length and batch size with ``n_examples`` per expert."""
    ev = setup.config.evaluation
    return StatsSpec(n_examples, ev.max_length, ev.batch_size)


def training_sample(name: str, n_examples: int) -> Any:
    """Expert ``name``'s training sample: the first ``n_examples`` of the domain of the same
    name's train split, stratified (a ``Split``)."""
    from evolver_opt.data import list_domains, load_split

    if name not in list_domains():
        raise ConfigError(
            f"expert {name!r}: the Fisher and RegMean statistics use the expert's own training "
            f"data, the domain of the same name, and there is no domain {name!r}"
        )
    return load_split(name, "train").subset(n_examples)


def training_batches(setup: Any, split: Any, batch_size: int, max_length: int) -> list[dict]:
    """``split`` tokenized like the evaluator does, as model-input batches (length-bucketed)."""
    from evolver_opt.evaluation import batches as _batches

    tok = setup.tokenizer
    ids = _batches.tokenize(split, tok, max_length, _batches.tokenizer_fingerprint(tok))
    pad = 0 if tok.pad_token_id is None else int(tok.pad_token_id)
    built = _batches.make_batches(
        ids, split.labels, batch_size=batch_size, pad_id=pad,
        padding_side=getattr(tok, "padding_side", "right"),
    )  # fmt: skip
    return [{"input_ids": b.input_ids, "attention_mask": b.attention_mask} for b in built]


def expert_identity(folder: Path) -> list[list[Any]]:
    """The expert folder's own files: ``[name, size, mtime_ns]`` each (not its statistics)."""
    return [
        [p.name, p.stat().st_size, p.stat().st_mtime_ns]
        for p in sorted(Path(folder).iterdir())
        if p.is_file()
    ]


def _tensor_names(engine: Any, kind: str) -> list[str]:
    return sorted(linear_layers(engine)) if kind == "regmean" else list(engine.layout.names)


def stats_key(setup: Any, kind: str, i: int, split: Any, spec: StatsSpec) -> dict[str, Any]:
    """Everything the statistics of expert ``i`` depend on (hashed into the file name)."""
    from evolver_opt.evaluation.batches import tokenizer_fingerprint

    engine = setup.engine
    names = "\n".join(_tensor_names(engine, kind))
    return {
        "format": FORMAT,
        "kind": kind,
        **spec.as_json(),
        "sample": split.fingerprint,
        "tokenizer": tokenizer_fingerprint(setup.tokenizer),
        "tensors": hashlib.sha256(names.encode()).hexdigest(),
        "heads_merged": bool(engine.heads_merged),
        "expert": expert_identity(engine.checkpoints.models[i].path),
    }


def stats_folder(expert_dir: Path) -> Path:
    """``<expert dir>/merge-stats``, or a folder under the cache when the expert's is read-only."""
    expert_dir = Path(expert_dir)
    if os.access(expert_dir, os.W_OK):
        return expert_dir / STATS_DIR
    tag = hashlib.sha256(str(expert_dir.resolve()).encode()).hexdigest()[:12]
    return cache_dir() / STATS_DIR / f"{expert_dir.name}-{tag}"


def stats_path(setup: Any, kind: str, i: int, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return stats_folder(setup.engine.checkpoints.models[i].path) / f"{kind}-{digest}.safetensors"


def expected_shapes(engine: Any, kind: str) -> dict[str, tuple[int, ...]]:
    """The shape of each statistics tensor of this merge: Fisher, the flat length of each
    merged tensor; RegMean, ``(d, d)`` for a linear layer with ``d`` inputs."""
    if kind == "regmean":
        return {
            name: (int(module.weight.shape[0 if transposed else 1]),) * 2
            for name, (module, transposed) in linear_layers(engine).items()
        }
    return {name: (e - s,) for name, (s, e) in _spans(engine).items()}


def names_problem(names: set[str], kind: str, shapes: Mapping[str, Any]) -> str | None:
    """Why a file holding tensors ``names`` is not this merge's statistics, or None.

    RegMean may lack a linear layer no input reached; Fisher has every merged tensor."""
    extra = sorted(names - set(shapes))
    missing = [] if kind == "regmean" else sorted(set(shapes) - names)
    if not extra and not missing:
        return None
    found = [f"unknown {extra[:3]}"] * bool(extra) + [f"missing {missing[:3]}"] * bool(missing)
    return f"it holds other tensors than this merge's ({'; '.join(found)})"


def tensor_problem(
    name: str, tensor: torch.Tensor, kind: str, shape: tuple[int, ...]
) -> str | None:
    """Why ``tensor`` is not a valid statistics tensor ``name`` of ``kind``, or None."""
    if tuple(tensor.shape) != shape:
        return f"tensor {name!r} has shape {list(tensor.shape)}, expected {list(shape)}"
    if tensor.dtype != DTYPES[kind]:
        return f"tensor {name!r} is {tensor.dtype}, expected {DTYPES[kind]}"
    if not bool(torch.isfinite(tensor).all()):
        return f"tensor {name!r} holds NaN or inf"
    signed = tensor if kind == "fisher" else torch.diagonal(tensor)
    if bool((signed < 0).any()):
        what = "values" if kind == "fisher" else "diagonal entries"
        return f"tensor {name!r} has negative {what} (a {kind} statistic is non-negative)"
    return None


def stats_problem(
    tensors: Iterator[tuple[str, torch.Tensor]] | Mapping[str, torch.Tensor],
    kind: str,
    shapes: Mapping[str, tuple[int, ...]],
) -> str | None:
    """Why the statistics ``tensors`` (a mapping, or name-tensor pairs read one at a time)
    are not this merge's, or None when every tensor is valid."""
    pairs = tensors.items() if isinstance(tensors, Mapping) else tensors
    for name, tensor in pairs:
        problem = tensor_problem(name, tensor, kind, shapes[name])
        if problem is not None:
            return problem
    return None


def file_problem(
    path: Path, key: dict[str, Any], kind: str, shapes: Mapping[str, tuple[int, ...]]
) -> str | None:
    """Why the cached file ``path`` cannot serve as the statistics ``key``, or None.

    Tensors are read one at a time (a file is up to hundreds of MB)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = (f.metadata() or {}).get("key")
            if stored != json.dumps(key, sort_keys=True):
                return "its stored key is not this expert's (another expert's or settings' file)"
            names = set(f.keys())
            problem = names_problem(names, kind, shapes)
            if problem is not None:
                return problem
            return stats_problem(((n, f.get_tensor(n)) for n in sorted(names)), kind, shapes)
    except _UNREADABLE as exc:
        return f"it cannot be read ({type(exc).__name__}: {exc})"


def compute_stats(kind: str, engine: Any, i: int, batches: list[dict]) -> dict[str, torch.Tensor]:
    """Expert ``i``'s statistics by tensor name (Fisher: per merged tensor; RegMean: the Gram
    matrix per merged linear layer)."""
    if kind == "regmean":
        return {n: g.contiguous() for n, g in expert_grams(engine, i, batches).items()}
    flat = expert_fisher(engine, i, batches)
    return {n: flat[s:e].clone() for n, (s, e) in _spans(engine).items()}


def _spans(engine: Any) -> dict[str, tuple[int, int]]:
    return {n: engine.layout.span(n) for n in engine.layout.names}


def ensure_stats(
    setup: Any, kind: str, spec: StatsSpec, echo: Callable[[str], Any] = print
) -> list[Path]:
    """The statistics file of every expert (engine order), computing only the missing ones."""
    if kind not in KINDS:
        raise ConfigError(f"unknown statistics {kind!r}; expected one of {KINDS}")
    engine = setup.engine
    shapes = expected_shapes(engine, kind)
    paths = []
    for i, name in enumerate(engine.model_names):
        split = training_sample(name, spec.n_examples)
        key = stats_key(setup, kind, i, split, spec)
        path = stats_path(setup, kind, i, key)
        if path.is_file():
            problem = file_problem(path, key, kind, shapes)
            if problem is None:
                echo(f"{kind} statistics of {name}: loading {path}")
                paths.append(path)
                continue
            warnings.warn(
                f"{kind} statistics of {name}: the cached file {path} is unusable ({problem}); "
                "recomputing it",
                StatsCacheWarning,
                stacklevel=2,
            )
        echo(f"{kind} statistics of {name}: computing on {len(split)} training examples")
        size = 1 if kind == "fisher" else spec.batch_size  # Fisher: unpadded, one at a time
        batches = training_batches(setup, split, size, spec.max_length)
        with engine.model_precision(torch.float32):
            stats = compute_stats(kind, engine, i, batches)
        _save(stats, path, key)
        paths.append(path)
    return paths


def _make_folder(folder: Path) -> None:
    """Create the statistics folder, or say clearly why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the merge statistics folder {folder} ({exc.strerror or exc}); "
            "remove or rename what is in the way, or make its parent writable"
        ) from None


def _save(stats: dict[str, torch.Tensor], path: Path, key: dict[str, Any]) -> None:
    """Write ``stats`` to ``path`` atomically: a unique temporary file beside it, renamed."""
    _make_folder(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    cpu = {n: t.detach().cpu().contiguous() for n, t in stats.items()}
    try:
        save_file(cpu, str(tmp), metadata={"key": json.dumps(key, sort_keys=True)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class StoredStats(Sequence):
    """Each expert's statistics, loaded from its file when the merge asks for them (one in
    memory at a time): Fisher as a flat float32 vector in the engine's layout, RegMean as the
    Gram dict. Pass it as ``fishers=`` or ``grams=``."""

    def __init__(self, engine: Any, kind: str, paths: Sequence[Path]) -> None:
        self.engine, self.kind, self.paths = engine, kind, list(paths)
        self.shapes = expected_shapes(engine, kind)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:  # type: ignore[override]
        stats = self._load(Path(self.paths[i]))
        if self.kind == "regmean":
            return stats
        engine = self.engine
        flat = torch.empty(engine.output.numel(), dtype=torch.float32, device=engine.device)
        for name, (s, e) in _spans(engine).items():
            flat[s:e].copy_(stats[name].reshape(-1))
        return flat

    def _load(self, path: Path) -> dict[str, torch.Tensor]:
        """The checked tensors of ``path`` (changed since ``ensure_stats`` checked it: refused)."""
        try:  # read into memory, not mapped: a file cut later cannot crash a live tensor
            stats = load(path.read_bytes())
        except _UNREADABLE as exc:
            problem: str | None = f"it cannot be read ({type(exc).__name__}: {exc})"
        else:
            problem = names_problem(set(stats), self.kind, self.shapes)
            problem = problem or stats_problem(stats, self.kind, self.shapes)
        if problem is not None:
            raise ConfigError(
                f"{self.kind} statistics file {path} is unusable: {problem}; delete it and run "
                "again to recompute it"
            )
        return {n: t.to(self.engine.device) for n, t in stats.items()}


class SlotStats(Sequence):
    """The statistics of a weight-space population's individuals, for a merger over its rows.

    As in the released Evolver code, an individual keeps the statistics of the expert that
    seeded its slot, however it evolves; a slot seeded by a static merge (coefficients
    ``c``, models x groups) gets the mix ``sum_i m_i S_i`` of the experts' statistics, ``m``
    being ``c``'s per-model mean normalized to sum 1 (the uniform average: the mean of all).
    Mixes are kept in memory once built; an expert's own statistics load from its file.
    """

    def __init__(self, stored: Sequence, init_coefficients: Sequence[Any]) -> None:
        self.stored = stored
        self.mixes = [_mix_weights(c, len(stored)) for c in init_coefficients]
        self._built: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.mixes)

    def __getitem__(self, slot: int) -> Any:  # type: ignore[override]
        weights = self.mixes[slot]
        nonzero = [i for i, w in enumerate(weights) if w != 0.0]
        if len(nonzero) == 1:
            return self.stored[nonzero[0]]
        if slot not in self._built:
            self._built[slot] = _weighted_sum(self.stored, weights)
        return self._built[slot]


def _mix_weights(coefficients: Any, n_models: int) -> list[float]:
    c = np.asarray(coefficients, dtype=np.float64).reshape(n_models, -1).mean(axis=1)
    c = np.clip(c, 0.0, None)
    if c.sum() <= 0:
        raise ConfigError(
            f"a population slot seeded by coefficients {c.round(3).tolist()} has no positive "
            "model weight, so it has no statistics to inherit"
        )
    return (c / c.sum()).tolist()


def _weighted_sum(stored: Sequence, weights: Sequence[float]) -> Any:
    total: Any = None
    for i, w in enumerate(weights):
        if w == 0.0:
            continue
        stats = stored[i]
        if isinstance(stats, Mapping):  # RegMean: Gram matrices by layer
            total = {} if total is None else total
            for name, t in stats.items():
                total[name] = t * w if name not in total else total[name].add_(t, alpha=w)
        else:  # Fisher: one flat vector
            total = stats * w if total is None else total.add_(stats, alpha=w)
    return total
