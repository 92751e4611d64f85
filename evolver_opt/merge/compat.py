"""Compatibility check of a checkpoint set against the working model, and the head decision.

The result is a :class:`Plan`: for every unique parameter of the working model (tied weights
once), which key holds it in each checkpoint, whether it is part of the task head, and whether
heads are merged. Every refusal names the model, the tensor and both shapes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from evolver_opt.errors import CheckpointError, ConfigError
from evolver_opt.merge.checkpoints import Checkpoint, CheckpointSet, label_space, resolve_key

HEAD_MODES = ("merge", "separate", "auto")


@dataclass
class Plan:
    """What to read from where; built once by :func:`plan_merge`."""

    names: list[str]  # unique parameters (first alias), model order
    shapes: dict[str, tuple[int, ...]]
    aliases: dict[str, list[str]]  # tied names of each parameter
    keys: list[dict[str, str | None]]  # per checkpoint (base first): param -> key
    head_names: list[str]
    heads_merged: bool
    base_head_missing: bool


def unique_parameters(model: nn.Module) -> tuple[list[str], dict[str, list[str]]]:
    """First name of every distinct parameter, and all names (aliases) tied to it."""
    by_id: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(name)
    names = [aliases[0] for aliases in by_id.values()]
    return names, {a[0]: a for a in by_id.values()}


def head_parameters(model: nn.Module, names: list[str]) -> list[str]:
    """Parameters outside the backbone (``model.base_model_prefix``): the task head."""
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix or not hasattr(model, prefix):
        return []
    return [n for n in names if not n.startswith(prefix + ".")]


def plan_merge(ckpts: CheckpointSet, model: nn.Module, heads: str) -> Plan:
    """Check every checkpoint against the working model and decide how heads are treated."""
    if heads not in HEAD_MODES:
        raise ConfigError(f"heads={heads!r} is not one of {list(HEAD_MODES)}")
    names, aliases = unique_parameters(model)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    head_names = head_parameters(model, names)
    prefix = getattr(model, "base_model_prefix", "")
    first = ckpts.models[0]
    all_ckpts = [ckpts.base, *ckpts.models]
    keys = [{n: resolve_key(c, aliases[n], prefix) for n in names} for c in all_ckpts]

    for c, kmap in zip(all_ckpts, keys):
        for n in names:
            if kmap[n] is None and not (c is ckpts.base and n in head_names):
                raise CheckpointError(
                    f"model {c.name!r}: tensor {n} is missing from {c.path} (looked for "
                    f"{', '.join(aliases[n])})"
                )

    _refuse_extra_tensors(ckpts.models, keys[1:], model, prefix)

    # Body: each fine-tuned model must match the base, name by name and shape by shape.
    body = [n for n in names if n not in head_names]
    for c, kmap in zip(ckpts.models, keys[1:]):
        for n in body:
            got, want = c.index[kmap[n]].shape, ckpts.base.index[keys[0][n]].shape
            if got != want:
                raise CheckpointError(
                    f"model {c.name!r}: tensor {n} has shape {got} but base has shape {want}"
                )
        for n in body:
            got, want = c.index[kmap[n]].shape, shapes[n]
            if got != want:
                raise CheckpointError(
                    f"model {c.name!r}: tensor {n} has shape {got} but the working model "
                    f"({type(model).__name__}) expects {want}"
                )

    for c in all_ckpts:
        _check_tied(c, names, aliases)
    heads_merged, reason = _decide_heads(ckpts, keys, head_names, heads)
    if not heads_merged and heads == "merge":
        raise CheckpointError(f"heads='merge' is impossible: {reason}")
    base_head_missing = any(keys[0][n] is None for n in head_names)
    if heads_merged:
        for n in head_names:
            ref = first.index[keys[1][n]].shape
            base_key = keys[0][n]
            if base_key is not None and ckpts.base.index[base_key].shape != ref:
                raise CheckpointError(
                    f"model 'base': tensor {n} has shape {ckpts.base.index[base_key].shape} but "
                    f"model {first.name!r} has shape {ref}; use heads='separate'"
                )
    _warn_dtypes(ckpts, keys, names)
    return Plan(names, shapes, aliases, keys, head_names, heads_merged, base_head_missing)


def _refuse_extra_tensors(
    models: list[Checkpoint], keys: list[dict[str, str | None]], model: nn.Module, prefix: str
) -> None:
    """A fine-tuned model storing tensors the working model has no place for (an extra layer,
    another architecture's head) would lose them silently: refuse, listing them."""
    known = {a for names in unique_parameters(model)[1].values() for a in names}
    known |= {name for name, _ in model.named_buffers()}
    known |= {k.removeprefix(prefix + ".") for k in known if prefix}
    for ckpt, kmap in zip(models, keys):
        extra = sorted(set(ckpt.index) - known - {k for k in kmap.values() if k})
        if extra:
            shown = ", ".join(extra[:8]) + (
                f" (and {len(extra) - 8} more)" if len(extra) > 8 else ""
            )
            raise CheckpointError(
                f"model {ckpt.name!r}: {len(extra)} tensor(s) in {ckpt.path} have no place in the "
                f"base's architecture ({type(model).__name__}, built from the base config): "
                f"{shown}. Is it fine-tuned from another (larger) base?"
            )


def _check_tied(ckpt: Checkpoint, names: list[str], aliases: dict[str, list[str]]) -> None:
    """A checkpoint storing several names of one tied parameter must store one value."""
    for n in names:
        present = [a for a in aliases[n] if a in ckpt.index]
        if len(present) < 2:
            continue
        tensors = dict(ckpt.iter_read(present))
        first = tensors[present[0]]
        for other in present[1:]:
            if not torch.equal(tensors[other], first):
                raise CheckpointError(
                    f"model {ckpt.name!r}: tensors {present[0]} and {other} differ, but the "
                    "architecture ties them (one parameter); was it saved untied?"
                )


def _decide_heads(
    ckpts: CheckpointSet, keys: list[dict[str, str | None]], head_names: list[str], heads: str
) -> tuple[bool, str]:
    """(merge heads?, why not) from the label names and head shapes of the fine-tuned models."""
    if not head_names:
        if heads == "separate":
            raise ConfigError("heads='separate' but this architecture has no task head to keep")
        return True, ""
    first = ckpts.models[0]
    reason = ""
    for c, kmap in zip(ckpts.models[1:], keys[2:]):
        for n in head_names:
            got, want = c.index[kmap[n]].shape, first.index[keys[1][n]].shape
            if got != want:
                reason = (
                    f"model {c.name!r}: head tensor {n} has shape {got} but model "
                    f"{first.name!r} has shape {want}"
                )
                break
        if not reason and label_space(c.config) != label_space(first.config):
            reason = (
                f"model {c.name!r} has labels {list(label_space(c.config))} but model "
                f"{first.name!r} has {list(label_space(first.config))}"
            )
        if reason:
            break
    if heads == "separate":
        return False, "heads='separate' was asked for"
    return not reason, reason


def _warn_dtypes(ckpts: CheckpointSet, keys: list[dict[str, str | None]], names: list[str]) -> None:
    """Name every stored-dtype difference against the base (all are cast to the engine dtype)."""
    notes = []
    all_ckpts = [ckpts.base, *ckpts.models]
    for n in names:
        ref_key = keys[0][n]
        if ref_key is None:
            continue
        ref = ckpts.base.index[ref_key].dtype
        for c, kmap in zip(all_ckpts[1:], keys[1:]):
            key = kmap[n]
            if key is not None and c.index[key].dtype != ref:
                notes.append(f"model {c.name!r}: tensor {n} is {c.index[key].dtype}, base is {ref}")
    if notes:
        more = f" (and {len(notes) - 3} more)" if len(notes) > 3 else ""
        warnings.warn(
            "checkpoints differ in dtype; all are cast to the engine dtype: "
            + "; ".join(notes[:3])
            + more,
            stacklevel=3,
        )
