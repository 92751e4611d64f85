"""Export the working model as a normal Hugging Face directory, a model card and
``evolver_recipe.json``; with separate task heads, one such folder per task sharing one body
file (:data:`HEADS_LAYOUT`)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from evolver_opt.errors import CheckpointError
from evolver_opt.runtime.quiet import transformers_bars_off

if TYPE_CHECKING:
    from evolver_opt.merge.engine import Coefficients, MergeEngine
    from evolver_opt.merge.methods import MergeResult

RECIPE_FILE = "evolver_recipe.json"
ALL_HEADS = "all"  # export(head=ALL_HEADS): one folder per task head
BODY_FILE = "model-body.safetensors"  # the merged body, shared by every task folder
HEAD_FILE = "model-head.safetensors"  # one task's head
INDEX_FILE = "model.safetensors.index.json"
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
HEADS_LAYOUT = f"""One folder per task; each loads on its own with
`AutoModelForSequenceClassification.from_pretrained(folder)`:

```
README.md, {RECIPE_FILE}     this card and the recipe of the whole export
<task>/
  config.json                  the task's labels (id2label)
  {INDEX_FILE}   which file holds each tensor (transformers' sharded format)
  {BODY_FILE}       the merged body: the same file in every task folder
  {HEAD_FILE}       this task's own classification head
  tokenizer files, README.md, {RECIPE_FILE}
```

`{BODY_FILE}` is one file hard-linked into every task folder (stored once; `ls -li`
shows one inode); on a filesystem without hard links each folder holds a copy ("body": "linked"
or "copied" in `{RECIPE_FILE}`). Copying the export elsewhere with `cp -r` or uploading a
folder makes ordinary files of the links: each folder stays complete."""


def export_merged(
    engine: MergeEngine,
    out_dir: str | Path,
    coefficients: Coefficients | MergeResult | None = None,
    recipe: dict[str, Any] | None = None,
    *,
    head: str | None = None,
    overwrite: bool = False,
    mergekit: bool = False,
) -> Path:
    """Write the merge to ``out_dir`` atomically (temporary directory, then rename), with a
    model card (``README.md``, :mod:`evolver_opt.export.card`) and ``evolver_recipe.json``.

    A crash (even SIGKILL) at any point leaves ``out_dir`` holding nothing or a complete export
    (the previous one or the new one), never a torn one; hidden ``.<name>.*`` folders beside it
    may be left behind. The files are fsynced before the rename.

    ``coefficients``: an array or name -> value mapping (applied first), a method's
    :class:`MergeResult` (re-applied if the engine was overwritten since), or None to export
    what the working model holds now. With separate heads, ``head`` names the task whose
    head is attached (default: the active one), or is ``"all"``: one folder per task sharing
    one body file (:data:`HEADS_LAYOUT`). ``recipe``: what the caller knows besides the merge
    (study, trial, scores, command: see :mod:`evolver_opt.export.card`). ``mergekit``: also
    write ``mergekit_config.yml`` (:mod:`evolver_opt.export.mergekit`; a merge mergekit cannot
    express is refused before anything is written).
    """
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
    heads = None if engine.heads_merged else _heads(engine, head)
    doc = _recipe_doc(engine, method, recipe)
    yamls = _mergekit_yamls(engine, doc, heads) if mergekit else {}
    with _atomic_dir(out_dir) as tmp:
        if heads is None or head != ALL_HEADS:
            if heads is not None:
                engine.use_head(heads[0])
                doc["head"] = heads[0]
            with transformers_bars_off():
                engine.model.save_pretrained(str(tmp), safe_serialization=True)
            _write_extras(engine, tmp, doc, yamls.get(doc.get("head")))
        else:
            _write_heads(engine, tmp, doc, heads, yamls)
    return out_dir


def _heads(engine: MergeEngine, head: str | None) -> list[str]:
    """The task heads to export (separate heads): all of them, or the one named or active."""
    if head == ALL_HEADS:
        return list(engine.model_names)
    name = head or engine.active_head or engine.model_names[0]
    return [engine.model_names[engine.genome.model_index(name)]]


def _recipe_doc(
    engine: MergeEngine, method: MergeResult | None, recipe: dict[str, Any] | None
) -> dict[str, Any]:
    from evolver_opt._version import __version__

    arch = type(engine.model).__name__
    doc: dict[str, Any] = {
        "evolver_opt_version": __version__,
        "base": str(engine.checkpoints.base.path),
        "models": {m.name: str(m.path) for m in engine.checkpoints.models},
        "granularity": engine.granularity,
        "group_names": engine.group_names,
        "heads_merged": engine.heads_merged,
        "head": None if engine.heads_merged else engine.active_head,
        "dtype": str(engine.model_dtype).removeprefix("torch."),
        "method": method.method if method else _coefficient_method(engine),
        "method_params": method.params if method else {},
        "coefficients": engine.state.get("coefficients"),
        "architecture": arch,
    }
    for suffix, auto, tag in _AUTO_CLASSES:
        if arch.endswith(suffix):
            doc["auto_class"], doc["pipeline_tag"] = auto, tag
            break
    if recipe:
        doc["recipe"] = recipe
    return doc


_AUTO_CLASSES = (
    ("ForSequenceClassification", "AutoModelForSequenceClassification", "text-classification"),
    ("ForCausalLM", "AutoModelForCausalLM", "text-generation"),
    ("ForConditionalGeneration", "AutoModelForSeq2SeqLM", "text2text-generation"),
)


def _coefficient_method(engine: MergeEngine) -> str:
    """What the coefficients the working model holds weigh: the task vectors or a form's parts."""
    from evolver_opt.export.mergekit import COEFFICIENTS, FORM_PREFIX

    form = engine.state.get("form")
    return COEFFICIENTS if form is None else FORM_PREFIX + str(form)


def _mergekit_yamls(
    engine: MergeEngine, doc: dict[str, Any], heads: list[str] | None
) -> dict[str | None, str]:
    """The mergekit YAML of each exported head (None: heads merged); refused up front."""
    from evolver_opt.export.mergekit import mergekit_config, to_yaml

    recipe = doc.get("recipe") or {}
    what = (
        f"study {recipe['study']!r}, trial {recipe.get('trial')}"
        if recipe.get("study")
        else f"{doc['method']} merge"
    )
    out = {}
    for head in heads or [None]:
        config = mergekit_config(
            engine, doc["method"], doc["method_params"], doc["coefficients"], head=head
        )
        note = what + (f", head of task {head!r}" if head else "")
        out[head] = to_yaml(config, note=f"reproduces evolver-opt's {note}")
    return out


def _write_extras(engine: MergeEngine, folder: Path, doc: dict[str, Any], yaml: str | None,
                  layout: str = "") -> None:  # fmt: skip
    """Tokenizer files, the recipe, the card and (asked for) the mergekit YAML."""
    from evolver_opt.export.card import CARD_FILE, render_card
    from evolver_opt.export.mergekit import MERGEKIT_FILE

    tok_src = engine.checkpoints.base.path
    for name in TOKENIZER_FILES:
        if (tok_src / name).is_file():
            shutil.copy2(tok_src / name, folder / name)
    (folder / RECIPE_FILE).write_text(json.dumps(doc, indent=2) + "\n")
    (folder / CARD_FILE).write_text(render_card(doc, layout=layout))
    if yaml is not None:
        (folder / MERGEKIT_FILE).write_text(yaml)


def _write_heads(
    engine: MergeEngine, root: Path, doc: dict[str, Any], heads: list[str],
    yamls: dict[str | None, str],
) -> None:  # fmt: skip
    """One loadable folder per task: the body saved once and linked, each task's own head."""
    from evolver_opt.export.card import CARD_FILE, render_card

    previous = engine.active_head
    head_names = set(engine.plan.head_names)
    first = root / heads[0]
    try:
        engine.use_head(heads[0])
        with transformers_bars_off():
            engine.model.save_pretrained(str(first), safe_serialization=True)
        saved = _read_saved(first)
        missing = sorted(head_names - set(saved))
        if missing:
            raise CheckpointError(
                f"the saved model names no head tensor {missing}: cannot split body and head"
            )
        body = {k: v for k, v in saved.items() if k not in head_names}
        save_file(body, str(first / BODY_FILE), metadata={"format": "pt"})
        del saved, body
        linked = True
        for task in heads:
            folder = root / task
            folder.mkdir(exist_ok=True)
            engine.use_head(task)
            if task != heads[0]:
                linked = _link_or_copy(first / BODY_FILE, folder / BODY_FILE) and linked
            state = engine.model.state_dict()
            own = {k: state[k].detach().contiguous().clone() for k in sorted(head_names)}
            save_file(own, str(folder / HEAD_FILE), metadata={"format": "pt"})
            engine.model.config.save_pretrained(str(folder))
            _write_index(folder, body_keys=_keys(first / BODY_FILE), head_keys=sorted(own))
            task_doc = {**doc, "head": task, "body": None}
            _write_extras(engine, folder, task_doc, yamls.get(task))
        body_state = "linked" if linked else "copied"
        for task in heads:  # the recipes say how the body is shared, now that it is known
            recipe = json.loads((root / task / RECIPE_FILE).read_text())
            recipe["body"] = body_state
            (root / task / RECIPE_FILE).write_text(json.dumps(recipe, indent=2) + "\n")
        top = {**doc, "head": None, "heads": heads, "body": body_state}
        (root / RECIPE_FILE).write_text(json.dumps(top, indent=2) + "\n")
        (root / CARD_FILE).write_text(render_card(top, layout=HEADS_LAYOUT))
    finally:
        if previous is not None:
            engine.use_head(previous)


def _read_saved(folder: Path) -> dict[str, Any]:
    """Every tensor ``save_pretrained`` wrote into ``folder`` (one file or shards), which are
    then removed: the folder keeps its config and our own files."""
    index = folder / INDEX_FILE
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values()))
        if index.is_file()
        else ["model.safetensors"]
    )
    out: dict[str, Any] = {}
    for name in files:
        out.update(load_file(str(folder / name)))
        (folder / name).unlink()
    index.unlink(missing_ok=True)
    return out


def _keys(path: Path) -> list[str]:
    with safe_open(str(path), framework="pt") as fh:
        return list(fh.keys())


def _write_index(folder: Path, *, body_keys: list[str], head_keys: list[str]) -> None:
    """transformers' sharded-checkpoint index: tensor name -> file."""
    weight_map = {k: BODY_FILE for k in body_keys} | {k: HEAD_FILE for k in head_keys}
    total = sum((folder / f).stat().st_size for f in (BODY_FILE, HEAD_FILE))
    doc = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / INDEX_FILE).write_text(json.dumps(doc, indent=2) + "\n")


def _link_or_copy(src: Path, dst: Path) -> bool:
    """Hard-link ``src`` to ``dst`` (True), or copy it where the filesystem refuses (False)."""
    try:
        os.link(src, dst)
        return True
    except OSError:
        shutil.copy2(src, dst)
        return False


@contextlib.contextmanager
def _atomic_dir(out_dir: Path) -> Iterator[Path]:
    """A temporary folder beside ``out_dir`` that replaces it (fsynced) once the block ends
    without an error, and is removed otherwise."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield tmp
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
    """fsync every file and folder under ``folder``, and ``folder`` itself."""
    for p in folder.iterdir():
        if p.is_dir():
            _fsync_tree(p)
        elif p.is_file():
            _fsync(p)
    _fsync(folder)
