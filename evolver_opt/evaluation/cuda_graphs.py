"""Dev scoring on a CUDA device at the speed of the model: counts kept on the device, optional
CUDA-graph replay of every batch.

The evaluator's own loop (``mode="eager"``, the default and the only path on CPU) reads each
batch's count back to the host, a synchronization per batch. On a CUDA device two more modes
exist (``$EVOLVER_OPT_CUDA_EVAL`` or ``Evaluator(cuda_eval=...)``):

- ``device``: the same forward passes, but the right-answer counts and log-probabilities are
  summed on the device; the host reads them once per split while racing (where the race can
  stop) and once per stage (the pruner's report, the final score);
- ``graphs``: as ``device``, and each batch (one static shape: the batches are built once per
  evaluator and stay on the device) is captured once as a ``torch.cuda.CUDAGraph`` and
  replayed; a trial is then a handful of replays. The merged weights are views of the merge
  engine's buffer, written in place, so a replay reads the current merge. A task head swapped
  in by ``before_split`` into new storage is copied into the storage the graph captured
  before each replay; a changed shape or dtype (``model_precision``) captures again.

Scores equal the eager loop's: the same examples in the same order, the same exact racing
bound, checked less often (a race stops at a split boundary instead of a batch; a stopped
race still reports an exact upper bound, a finished one the full score).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from evolver_opt.errors import ConfigError
from evolver_opt.evaluation import metrics

if TYPE_CHECKING:
    from evolver_opt.evaluation.batches import Batch
    from evolver_opt.evaluation.types import ScoredModel, StageCallback

ENV = "EVOLVER_OPT_CUDA_EVAL"
MODES = ("eager", "device", "graphs")
WARMUP = 2  # eager passes on a side stream before a capture (lazy library set-up)


def resolve_mode(setting: str | None, device: torch.device) -> str:
    """``eager`` on any non-CUDA device (nothing read); else ``setting`` or
    ``$EVOLVER_OPT_CUDA_EVAL`` (default ``eager``)."""
    if device.type != "cuda":
        return "eager"
    if setting is None:
        setting = os.environ.get(ENV, "").strip().lower() or "eager"
    if setting not in MODES:
        raise ConfigError(f"cuda_eval={setting!r} (or ${ENV}) is not one of {list(MODES)}")
    return setting


@dataclass
class _Captured:
    """One split's graphs and the parameter/buffer storage they read."""

    tensors: list[tuple[dict, str, torch.Tensor]]  # (module._parameters or ._buffers, name, t)
    graphs: dict[int, tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...]]] = field(
        default_factory=dict
    )


def _model_tensors(model: torch.nn.Module) -> list[tuple[dict, str, torch.Tensor]]:
    """Every parameter and buffer as (its owner's dict, name, the tensor's storage now)."""
    found = []
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            found.extend((table, name, t.detach()) for name, t in table.items() if t is not None)
    return found


def _refresh(captured: _Captured) -> bool:
    """Put the model's current values where the graphs read them; False if they cannot
    (a tensor's shape or dtype changed, or it is gone): capture again."""
    for table, name, held in captured.tensors:
        now = table.get(name)
        if now is None or now.shape != held.shape or now.dtype != held.dtype:
            return False
        if now.data_ptr() != held.data_ptr():  # e.g. a task head swapped into new storage
            held.copy_(now.detach())
    return True


class DeviceScorer:
    """The ``device`` and ``graphs`` modes of one evaluator (``evaluator.Evaluator``, which uses
    it on CUDA only; ``device`` mode runs on any device, which the CPU tests use)."""

    def __init__(self, evaluator: ScoredModel, graphs: bool) -> None:
        if graphs and evaluator.device.type != "cuda":
            raise ConfigError(f"CUDA graphs need a CUDA device, got {evaluator.device}")
        self.ev, self.graphs = evaluator, graphs
        self._captured: dict[str, _Captured] = {}
        self._pool: Any = None
        self.captures = 0  # graphs captured so far (tests, benchmarks)

    # -- one batch ------------------------------------------------------------------------
    def _forward(self, batch: Batch, *, capturing: bool = False) -> tuple[torch.Tensor, ...]:
        """Per row: predicted label, 1 if right, log-probability of the right label."""
        ev = self.ev
        if ev.bf16 and capturing:  # autocast's weight cache may not live across a capture
            cast = torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
        else:
            cast = ev._autocast()
        with cast:
            logits = ev._logits(batch)
        pred = logits.argmax(dim=-1)
        right = logits.log_softmax(dim=-1).gather(1, batch.labels[:, None])[:, 0]
        return pred, (pred == batch.labels).long(), right

    def _capture(self, batch: Batch) -> tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...]]:
        side = torch.cuda.Stream(device=self.ev.device)
        side.wait_stream(torch.cuda.current_stream(self.ev.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                self._forward(batch)
        torch.cuda.current_stream(self.ev.device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            outputs = self._forward(batch, capturing=True)
        self.captures += 1
        return graph, outputs

    def _outputs(self, key: str, b: int, batch: Batch) -> tuple[torch.Tensor, ...]:
        if not self.graphs:
            return self._forward(batch)
        captured = self._captured.get(key)
        if captured is None or not _refresh(captured):
            captured = self._captured[key] = _Captured(_model_tensors(self.ev.model))
        if b not in captured.graphs:
            try:
                captured.graphs[b] = self._capture(batch)
            except RuntimeError as exc:  # e.g. an op that synchronizes: eager from now on
                warnings.warn(
                    f"CUDA graph capture failed ({exc}); evaluating eagerly", stacklevel=4
                )
                self.graphs = False
                self._captured.clear()
                return self._forward(batch)
        graph, outputs = captured.graphs[b]
        graph.replay()
        # the graphs share one memory pool: another graph's replay may overwrite these
        return tuple(t.clone() for t in outputs)

    # -- a whole dev score ---------------------------------------------------------------
    def run(
        self,
        keys: list[str],
        stop_below: float | None,
        racing: bool,
        metric: str,
        stages: Sequence[float],
        on_stage: StageCallback | None,
    ) -> tuple[dict, dict, dict, dict, bool]:
        """``(correct, seen, logprob, preds, stopped)`` per split, as the eager loop makes."""
        ev, device = self.ev, self.ev.device
        all_batches = {key: ev.batches(key) for key in keys}
        totals = {key: len(ev._split(key)) for key in keys}
        n_right = torch.zeros(len(keys), dtype=torch.long, device=device)
        n_logprob = torch.zeros(len(keys), dtype=torch.float64, device=device)
        seen = dict.fromkeys(keys, 0)
        pending: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
        preds: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
        correct = dict.fromkeys(keys, 0)
        logprob = dict.fromkeys(keys, 0.0)

        def read() -> None:  # the one host synchronization of each check
            counts, sums = n_right.tolist(), n_logprob.tolist()
            for i, key in enumerate(keys):
                correct[key], logprob[key] = counts[i], sums[i]
                if pending[key]:
                    preds[key].append(torch.cat(pending[key], dim=1).cpu())
                    pending[key].clear()

        index = {key: i for i, key in enumerate(keys)}
        done: dict[tuple[str, int], tuple[torch.Tensor, ...]] = {}
        stopped, current = False, None
        ev.model.eval()
        for stage, work in enumerate(ev._schedule(keys, stages)):
            with torch.inference_mode():
                for n, (key, b, lo, hi) in enumerate(work):
                    if key != current and ev.before_split is not None:
                        ev.before_split(key)
                    current = key
                    batch = all_batches[key][b]
                    if (key, b) not in done:  # a batch cut between stages runs once
                        done[key, b] = self._outputs(key, b, batch)
                    pred, right, lp = done[key, b]
                    i = index[key]
                    n_right[i] += right[lo:hi].sum()
                    n_logprob[i] += lp[lo:hi].sum()
                    seen[key] += hi - lo
                    if metric == "macro_f1":
                        pending[key].append(torch.stack([pred[lo:hi], batch.labels[lo:hi]]))
                    split_ends = n + 1 == len(work) or work[n + 1][0] != key
                    if racing and split_ends:
                        read()
                        bound = metrics.best_possible_mean(
                            [(correct[k], seen[k], totals[k]) for k in keys]
                        )
                        if bound < stop_below:  # type: ignore[operator]
                            stopped = True
                            break
            if stopped:
                break
            read()
            if on_stage is not None:
                on_stage(stage, ev._running(keys, metric, correct, seen, preds), sum(seen.values()))
        return correct, seen, logprob, preds, stopped
