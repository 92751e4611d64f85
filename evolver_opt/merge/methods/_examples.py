"""Caller-supplied examples for data-dependent merges (Fisher, RegMean)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from evolver_opt.errors import ConfigError

if TYPE_CHECKING:
    from evolver_opt.merge.engine import MergeEngine

Batch = Mapping[str, torch.Tensor]
Examples = Mapping[str, Iterable[Batch]] | Sequence[Iterable[Batch]]


def per_model(engine: MergeEngine, examples: Examples | None) -> list[list[Batch]]:
    """Examples for each model in engine order: a mapping by model name or a list."""
    if examples is None:
        raise ConfigError("this method needs examples: {model name: [batch dict, ...]}")
    if isinstance(examples, Mapping):
        missing = [n for n in engine.model_names if n not in examples]
        unknown = [k for k in examples if k not in engine.model_names]
        if missing or unknown:
            raise ConfigError(
                f"examples miss models {missing} and name unknown ones {unknown}; "
                f"expected keys {engine.model_names}"
            )
        lists = [list(examples[n]) for n in engine.model_names]
    else:
        lists = [list(x) for x in examples]
        if len(lists) != engine.n_models:
            raise ConfigError(f"examples has {len(lists)} entries, expected {engine.n_models}")
    for name, batches in zip(engine.model_names, lists):
        if not batches:
            raise ConfigError(f"examples for model {name!r} are empty")
    return lists


def model_inputs(batch: Batch, device: torch.device) -> dict[str, Any]:
    """The batch on ``device`` without ``labels`` (the merge uses the model's own outputs)."""
    return {k: v.to(device) for k, v in batch.items() if k != "labels"}


def single_examples(batches: Iterable[Batch]) -> Iterator[Batch]:
    """Split batches into batches of one (per-example gradients)."""
    for batch in batches:
        size = next(iter(batch.values())).shape[0]
        for b in range(size):
            yield {k: v[b : b + 1] for k, v in batch.items()}


def load_model(engine: MergeEngine, i: int) -> None:
    """Make the working model hold fine-tuned model ``i`` exactly (its own head too)."""
    engine.apply(engine.one_hot(i))
    if not engine.heads_merged:
        engine.use_head(i)


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a transformers output."""
    logits = getattr(output, "logits", None)
    if logits is None:
        raise ConfigError(f"the model output {type(output).__name__} has no logits")
    return logits
