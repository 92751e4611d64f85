"""Reading checkpoints safely (safetensors; pickle only on explicit opt-in) and checking them.

Nothing here builds a model: a :class:`Checkpoint` is a directory's config plus an index of its
tensors (name -> file, shape, dtype) read from file headers, so incompatibilities are found
before any weight is loaded.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from evolver_opt.errors import CheckpointError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# torch dtype -> the safetensors header name, so both kinds of file report dtypes alike
_DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what its header says."""

    file: Path
    shape: tuple[int, ...]
    dtype: str


@dataclass
class Checkpoint:
    """One Hugging Face model directory: its config and the index of its weight tensors."""

    name: str
    path: Path
    config: Any  # transformers.PretrainedConfig
    index: dict[str, TensorInfo]
    pickled: bool = False
    _pickle_cache: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def iter_read(self, keys: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(key, tensor)`` one at a time (CPU, stored dtype), opening each file once."""
        for key, tensor in self._iter_stored(list(keys)):
            _check_finite(self.name, key, tensor)
            yield key, tensor

    def _iter_stored(self, keys: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
        if self.pickled:
            state = self._load_pickled()
            for k in keys:
                yield k, state[k]
            return
        from safetensors import safe_open

        by_file: dict[Path, list[str]] = {}
        for k in keys:
            by_file.setdefault(self.index[k].file, []).append(k)
        for file, names in by_file.items():
            try:
                with safe_open(str(file), framework="pt", device="cpu") as f:
                    tensors = [(k, f.get_tensor(k)) for k in names]
            except (OSError, SafetensorError) as exc:  # changed on disk since it was indexed
                raise CheckpointError(
                    f"model {self.name!r}: cannot read {file}: {_reason(exc)} (the file changed "
                    "or was truncated after the model was opened)"
                ) from None
            yield from tensors

    def _load_pickled(self) -> dict[str, torch.Tensor]:
        if self._pickle_cache is None:
            state: dict[str, torch.Tensor] = {}
            for file in sorted({info.file for info in self.index.values()}):
                state.update(_torch_load(file, self.name))
            self._pickle_cache = state
        return self._pickle_cache


@dataclass
class CheckpointSet:
    """The base checkpoint and the N fine-tuned ones, in order, with their names."""

    base: Checkpoint
    models: list[Checkpoint]

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]


def _check_finite(model: str, key: str, tensor: torch.Tensor) -> None:
    """Refuse a weight holding NaN or inf: every merge with it would be NaN (0 x NaN = NaN)."""
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise CheckpointError(
            f"model {model!r}: tensor {key} holds {bad} non-finite value(s) (NaN or inf) of "
            f"{tensor.numel()}; a merge with it is NaN everywhere. Re-export or retrain it"
        )


def _reason(exc: BaseException) -> str:
    """The first line of an exception's message (what a user needs to see)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _safetensors_files(path: Path, name: str) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted({path / f for f in weight_map.values()})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(
                f"model {name!r}: {index} is not a valid safetensors index ({_reason(exc)}); "
                "the file is truncated or damaged"
            ) from None
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(
                f"model {name!r}: {index} lists weight files that are missing: "
                + ", ".join(missing)
            )
        return files
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    return sorted(path.glob("*.safetensors"))


def _index_safetensors(files: Sequence[Path], name: str) -> dict[str, TensorInfo]:
    """Tensor index from the files' headers; a truncated or damaged file is a CheckpointError
    naming it (safetensors checks that the header covers the whole file)."""
    from safetensors import safe_open

    index: dict[str, TensorInfo] = {}
    for file in files:
        _check_readable(file, name)
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for k in f.keys():  # noqa: SIM118 - safe_open is not iterable
                    sl = f.get_slice(k)
                    index[k] = TensorInfo(file, tuple(sl.get_shape()), str(sl.get_dtype()))
        except (OSError, SafetensorError) as exc:
            raise CheckpointError(
                f"model {name!r}: {file} is not a readable safetensors file ({_reason(exc)}, "
                f"{_size(file)}); it is truncated or damaged: copy or export it again"
            ) from None
    return index


def _check_readable(file: Path, name: str) -> None:
    """A file this process may not open is said so (not "truncated or damaged")."""
    try:
        os.close(os.open(file, os.O_RDONLY))
    except OSError as exc:
        raise CheckpointError(
            f"model {name!r}: cannot open {file}: {exc.strerror or exc}"
            + (
                "; make it readable (chmod a+r) or run as its owner"
                if exc.errno == errno.EACCES
                else ""
            )
        ) from None


def _size(file: Path) -> str:
    try:
        return f"{file.stat().st_size} bytes"
    except OSError:
        return "missing"


def _torch_load(file: Path, name: str) -> dict[str, Any]:
    import pickle

    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise CheckpointError(
            f"model {name!r}: cannot read {file} ({_reason(exc)}, {_size(file)}); it is "
            "truncated, damaged or not a weights file"
        ) from None


def _index_pickle(files: Sequence[Path], name: str) -> dict[str, TensorInfo]:
    index: dict[str, TensorInfo] = {}
    for file in files:
        state = _torch_load(file, name)
        for k, t in state.items():
            if isinstance(t, torch.Tensor):
                name = _DTYPE_NAMES.get(t.dtype, str(t.dtype).removeprefix("torch."))
                index[k] = TensorInfo(file, tuple(t.shape), name)
    return index


def _load_config(path: Path, name: str, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    if not (path / "config.json").is_file():
        raise CheckpointError(f"model {name!r}: {path} has no config.json (not a Hugging Face dir)")
    try:
        raw = json.loads((path / "config.json").read_text())
    except (ValueError, OSError) as exc:
        raise CheckpointError(
            f"model {name!r}: {path}/config.json is not valid JSON ({_reason(exc)}); the file "
            "is truncated or damaged"
        ) from None
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"model {name!r}: {path}/config.json holds a JSON {type(raw).__name__}, not an object"
        )
    if raw.get("auto_map") and not trust_remote_code:
        raise CheckpointError(
            f"model {name!r}: {path}/config.json asks for custom code (auto_map); it is not run "
            "unless you pass trust_remote_code=True (--trust-remote-code)"
        )
    try:
        return AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, OSError) as exc:
        raise CheckpointError(f"model {name!r}: cannot read {path}/config.json: {exc}") from exc


def open_checkpoint(
    path: str | Path, name: str, *, allow_pickle: bool = False, trust_remote_code: bool = False
) -> Checkpoint:
    """Index one model directory; pickle weights are refused unless ``allow_pickle``."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"model {name!r}: {path} is not a directory")
    config = _load_config(path, name, trust_remote_code)
    files = _safetensors_files(path, name)
    if files:
        return Checkpoint(name, path, config, _index_safetensors(files, name))
    pickles = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    if not pickles:
        raise CheckpointError(f"model {name!r}: no weight files (*.safetensors) in {path}")
    if not allow_pickle:
        listed = ", ".join(p.name for p in pickles)
        raise CheckpointError(
            f"model {name!r}: {path} holds only pickle weights ({listed}); loading pickle can run "
            "arbitrary code, so it is refused. Convert the model to safetensors, or opt in with "
            "allow_pickle=True (--allow-pickle) if you trust the file"
        )
    return Checkpoint(name, path, config, _index_pickle(pickles, name), pickled=True)


def load_checkpoints(
    base_dir: str | Path,
    model_dirs: Sequence[str | Path],
    *,
    model_names: Sequence[str] | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> CheckpointSet:
    """Index the base and fine-tuned directories and check they share one architecture."""
    from evolver_opt.merge.groups import model_names_from

    if len(model_dirs) < 1:
        raise CheckpointError("at least one fine-tuned model directory is needed, got none")
    names = model_names_from([str(d) for d in model_dirs], model_names)
    kw = {"allow_pickle": allow_pickle, "trust_remote_code": trust_remote_code}
    base = open_checkpoint(base_dir, "base", **kw)
    models = [open_checkpoint(d, n, **kw) for d, n in zip(model_dirs, names)]
    base_type = base.config.model_type
    for m in models:
        if m.config.model_type != base_type:
            raise CheckpointError(
                f"model {m.name!r} is a {m.config.model_type!r} model but base is {base_type!r}"
            )
    arch0 = _architecture(models[0])
    for m in models[1:]:
        if _architecture(m) != arch0:
            raise CheckpointError(
                f"model {m.name!r} has architecture {_architecture(m)!r} but model "
                f"{models[0].name!r} has {arch0!r}"
            )
    return CheckpointSet(base, models)


def _architecture(ckpt: Checkpoint) -> str | None:
    archs = getattr(ckpt.config, "architectures", None) or [None]
    return archs[0]


def resolve_key(ckpt: Checkpoint, aliases: Sequence[str], prefix: str) -> str | None:
    """The checkpoint key holding a parameter known by ``aliases`` (tied names), or None.

    A base saved without its task head (e.g. ``BertModel``) stores ``embeddings...`` where the
    working model says ``bert.embeddings...``; the ``prefix`` is stripped to find it.
    """
    for a in aliases:
        if a in ckpt.index:
            return a
    if prefix:
        for a in aliases:
            if a.startswith(prefix + "."):
                stripped = a[len(prefix) + 1 :]
                if stripped in ckpt.index:
                    return stripped
    return None


def label_space(config: Any) -> tuple[str, ...]:
    """The label names of a classification config ((), when it has none)."""
    id2label = getattr(config, "id2label", None) or {}
    return tuple(str(id2label[k]) for k in sorted(id2label, key=int))
