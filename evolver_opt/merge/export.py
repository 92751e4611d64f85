"""Export the working model as a normal Hugging Face directory plus ``evolver_recipe.json``."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evolver_opt.errors import CheckpointError

if TYPE_CHECKING:
    from evolver_opt.merge.engine import Coefficients, MergeEngine
    from evolver_opt.merge.methods import MergeResult

RECIPE_FILE = "evolver_recipe.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "tokenizer.model",
    "sentencepiece.bpe.model",
    "chat_template.jinja",
)


def export_merged(
    engine: MergeEngine,
    out_dir: str | Path,
    coefficients: Coefficients | MergeResult | None = None,
    recipe: dict[str, Any] | None = None,
    *,
    head: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the merge to ``out_dir`` atomically (temporary directory, then rename).

    A crash (even SIGKILL) at any point leaves ``out_dir`` holding nothing or a complete export
    (the previous one or the new one), never a torn one; hidden ``.<name>.*`` folders beside it
    may be left behind. The files are fsynced before the rename.

    ``coefficients``: an array or name -> value mapping (applied first), a method's
    :class:`MergeResult` (re-applied if the engine was overwritten since), or None to export
    what the working model holds now. With separate heads, ``head`` names the task whose
    head is attached (default: the active one).
    """
    from evolver_opt import __version__
    from evolver_opt.merge.methods import MergeResult

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise CheckpointError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it")
    method = None
    if isinstance(coefficients, MergeResult):
        method = coefficients
        method.ensure_applied(engine)
    elif coefficients is not None:
        engine.apply(coefficients)
    if not engine.heads_merged:
        engine.use_head(head or engine.active_head or engine.model_names[0])

    doc: dict[str, Any] = {
        "evolver_opt_version": __version__,
        "base": str(engine.checkpoints.base.path),
        "models": {m.name: str(m.path) for m in engine.checkpoints.models},
        "granularity": engine.granularity,
        "group_names": engine.group_names,
        "heads_merged": engine.heads_merged,
        "head": None if engine.heads_merged else engine.active_head,
        "dtype": str(engine.dtype).removeprefix("torch."),
        "method": method.method if method else "coefficients",
        "method_params": method.params if method else {},
        "coefficients": engine.state.get("coefficients"),
    }
    if recipe:
        doc["recipe"] = recipe

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        engine.model.save_pretrained(str(tmp), safe_serialization=True)
        tok_src = engine.checkpoints.base.path
        for name in TOKENIZER_FILES:
            if (tok_src / name).is_file():
                shutil.copy2(tok_src / name, tmp / name)
        (tmp / RECIPE_FILE).write_text(json.dumps(doc, indent=2) + "\n")
        _permissions_from_umask(tmp)
        _fsync_tree(tmp)  # the files are on disk before the rename makes them visible
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
        _fsync(out_dir.parent)  # the rename itself
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _permissions_from_umask(folder: Path) -> None:
    """The modes a plain ``save_pretrained`` folder gets (0777 / 0666 less the umask), not the
    0700 of ``mkdtemp`` or the 0600 of a temp file: others may read an export under umask 022."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """fsync every file of ``folder`` and the folder itself."""
    for p in folder.iterdir():
        if p.is_file():
            _fsync(p)
    _fsync(folder)
