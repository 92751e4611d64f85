"""Type names shared by the evaluator and its CUDA scoring modes, in a module of their own so
that ``evaluator.py`` (which drives ``cuda_graphs.py``) and ``cuda_graphs.py`` (which reads the
evaluator) do not import each other, not even for type checking."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

    from evolver_opt.data import Split
    from evolver_opt.evaluation.batches import Batch

# After each stage: (stage index, running score over the examples seen, examples seen).
StageCallback = Callable[[int, float, int], None]


class ScoredModel(Protocol):
    """What the CUDA scoring modes (``cuda_graphs.DeviceScorer``) read from an evaluator
    (``evaluator.Evaluator`` is the one implementation): its model, device and precision, its
    batches and stage schedule, and the eager loop's forward pass and running score."""

    model: torch.nn.Module
    device: torch.device
    bf16: bool
    before_split: Callable[[str], None] | None

    def batches(self, split_key: str) -> Sequence[Batch]: ...

    def _split(self, split_key: str) -> Split: ...

    def _autocast(self) -> contextlib.AbstractContextManager: ...

    def _logits(self, batch: Batch) -> torch.Tensor: ...

    def _schedule(
        self, keys: list[str], stages: Sequence[float]
    ) -> list[list[tuple[str, int, int, int]]]: ...

    def _running(self, keys, metric, correct, seen, preds) -> float: ...
