"""Tokenize each split once per process, then cut it into padded, length-bucketed batches."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch

from evolver_opt.data import Split

# (tokenizer fingerprint, max_length, split fingerprint) -> token id lists
_TOKEN_CACHE: dict[tuple[str, int, str], list[list[int]]] = {}
_STATS = {"tokenize_calls": 0}


@dataclass(frozen=True)
class Batch:
    """Padded tensors for one batch, with the positions of its examples in the split."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor

    def rows(self, start: int, end: int) -> Batch:
        """Rows ``start:end`` of the batch (views, no copy)."""
        return Batch(
            self.input_ids[start:end],
            self.attention_mask[start:end],
            self.labels[start:end],
            self.index[start:end],
        )


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A key that changes when the tokenizer's vocabulary or rules do."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)  # call-time settings the tokenizer keeps as state
        state.pop("padding", None)
        blob = json.dumps(state, sort_keys=True)
    else:
        blob = repr(sorted(tokenizer.get_vocab().items()))
    extra = f"{type(tokenizer).__name__}|{tokenizer.padding_side}|{tokenizer.pad_token_id}"
    return hashlib.sha256((blob + extra).encode()).hexdigest()


def tokenize(split: Split, tokenizer: Any, max_length: int, fingerprint: str) -> list[list[int]]:
    """Token ids of every text, truncated to ``max_length``; cached for the process."""
    key = (fingerprint, max_length, split.fingerprint)
    cached = _TOKEN_CACHE.get(key)
    if cached is None:
        _STATS["tokenize_calls"] += 1
        encoded = tokenizer(list(split.texts), truncation=True, max_length=max_length)
        cached = _TOKEN_CACHE[key] = [list(ids) for ids in encoded["input_ids"]]
    return cached


def tokenize_calls() -> int:
    """How many splits were actually tokenized in this process (for tests and benchmarks)."""
    return _STATS["tokenize_calls"]


def clear_cache() -> None:
    """Forget all cached tokenizations."""
    _TOKEN_CACHE.clear()


def make_batches(
    ids: list[list[int]],
    labels: list[int] | tuple[int, ...],
    *,
    batch_size: int,
    pad_id: int,
    padding_side: str = "right",
    bucketing: bool = True,
    pad_to: int | None = None,
    seed: int = 0,
) -> list[Batch]:
    """Batches of ``batch_size`` examples, each padded to its own longest (or to ``pad_to``).

    With ``bucketing`` the examples are sorted by length first so padding is minimal, and the
    batch order is then shuffled (seeded) so that a race sees a mix of lengths early.
    """
    order = (
        sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
        if bucketing
        else list(range(len(ids)))
    )
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if bucketing:
        perm = torch.randperm(len(chunks), generator=torch.Generator().manual_seed(seed)).tolist()
        chunks = [chunks[i] for i in perm]
    batches = []
    for chunk in chunks:
        width = pad_to or max(len(ids[i]) for i in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            seq = torch.tensor(ids[i][:width], dtype=torch.long)
            span = slice(width - len(seq), width) if padding_side == "left" else slice(0, len(seq))
            input_ids[row, span] = seq
            mask[row, span] = 1
        batches.append(
            Batch(
                input_ids=input_ids,
                attention_mask=mask,
                labels=torch.tensor([labels[i] for i in chunk], dtype=torch.long),
                index=torch.tensor(chunk, dtype=torch.long),
            )
        )
    return batches
