"""Granularity: which coefficient group each merged tensor belongs to, and the group names.

A group is a contiguous span of the flat weight buffer, so one coefficient per (model, group)
is applied to a slice. Names are stable and readable; they become the search-space parameter
names ``w.<model>.<group>`` (:class:`evolver_opt.core.genome.Genome`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from evolver_opt.errors import ConfigError

GRANULARITIES = ("model", "layer", "tensor")

# a transformer block: "<container>.<index>." e.g. "bert.encoder.layer.3.", "model.layers.0."
_BLOCK = re.compile(r"^(.*?\.\d+)\.")
_EMBED = re.compile(r"(^|\.)(embed\w*|embeddings|wte|wpe|shared|word_embeddings)(\.|$)")


def block_of(name: str) -> str | None:
    """The transformer block a tensor belongs to (``bert.encoder.layer.3``), or None."""
    block = _BLOCK.match(name)
    return block.group(1) if block else None


def _layer_group(name: str, is_head: bool) -> str:
    if is_head:
        return "head"
    block = _BLOCK.match(name)
    if block:
        return block.group(1)
    if _EMBED.search(name):
        return "embeddings"
    parts = name.split(".")[:-1]  # drop "weight"/"bias"
    return ".".join(parts[:2]) if parts else name


def group_of(name: str, granularity: str, *, is_head: bool = False) -> str:
    """The group a tensor belongs to under ``granularity``."""
    if granularity == "model":
        return "all"
    if granularity == "layer":
        return _layer_group(name, is_head)
    if granularity == "tensor":
        return name
    raise ConfigError(f"granularity={granularity!r} is not one of {list(GRANULARITIES)}")


@dataclass(frozen=True)
class Layout:
    """Where each merged tensor lives in the flat buffer and which group it belongs to."""

    names: tuple[str, ...]  # tensor names in buffer order
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]  # start of each tensor in the flat buffer
    group_names: tuple[str, ...]
    group_spans: tuple[tuple[int, int], ...]  # [start, end) of each group
    numel: int

    @cached_property
    def _spans(self) -> dict[str, tuple[int, int]]:
        ends = [*self.offsets[1:], self.numel]
        return {n: (s, e) for n, s, e in zip(self.names, self.offsets, ends)}

    def span(self, name: str) -> tuple[int, int]:
        """[start, end) of tensor ``name`` in the flat buffer."""
        return self._spans[name]


def build_layout(
    names: Sequence[str],
    shapes: Sequence[tuple[int, ...]],
    granularity: str,
    head_names: Sequence[str] = (),
) -> Layout:
    """Order tensors group by group (groups in order of first appearance) and assign spans."""
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity={granularity!r} is not one of {list(GRANULARITIES)}")
    heads = set(head_names)
    members: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        members.setdefault(group_of(name, granularity, is_head=name in heads), []).append(i)
    order_names: list[str] = []
    order_shapes: list[tuple[int, ...]] = []
    offsets: list[int] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    for idx in members.values():
        start = pos
        for i in idx:
            n = 1
            for d in shapes[i]:
                n *= d
            order_names.append(names[i])
            order_shapes.append(tuple(shapes[i]))
            offsets.append(pos)
            pos += n
        spans.append((start, pos))
    return Layout(
        names=tuple(order_names),
        shapes=tuple(order_shapes),
        offsets=tuple(offsets),
        group_names=tuple(members),
        group_spans=tuple(spans),
        numel=pos,
    )


_SAFE = re.compile(r"[^A-Za-z0-9_\-]+")


def model_names_from(dirs: Sequence[str], given: Sequence[str] | None) -> list[str]:
    """Readable unique model names: ``given`` (validated) or the directory basenames."""
    if given is not None:
        names = list(given)
        if len(names) != len(dirs):
            raise ConfigError(f"model_names has {len(names)} names, expected {len(dirs)}")
        for n in names:
            if not n or _SAFE.search(n):
                raise ConfigError(f"model name {n!r} must be non-empty letters, digits, '_' or '-'")
        if len(set(names)) != len(names):
            raise ConfigError(f"model_names must be unique, got {names}")
        return names
    names = []
    for d in dirs:
        base = _SAFE.sub("_", str(d).rstrip("/").rsplit("/", 1)[-1]).strip("_") or "model"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names
