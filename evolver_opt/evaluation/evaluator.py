"""Batched inference over cached, bucketed splits, with exact racing on accuracy."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from evolver_opt.data import Split, require_selectable
from evolver_opt.errors import ConfigError, SplitError
from evolver_opt.evaluation import batches as _batches
from evolver_opt.evaluation import cuda_graphs, metrics
from evolver_opt.evaluation.types import StageCallback

PADDING_MODES = ("bucket", "dynamic", "max_length")


@dataclass(frozen=True)
class EvalResult:
    """One split's evaluation.

    When ``stopped_early``, ``accuracy`` is over the ``n_seen`` examples seen, ``macro_f1`` is
    None, and ``best_possible`` (< the threshold) bounds the full-split accuracy from above.
    Otherwise ``best_possible`` equals ``accuracy``.
    """

    split_key: str
    accuracy: float
    macro_f1: float | None
    n_seen: int
    n_total: int
    raced: bool
    stopped_early: bool
    best_possible: float
    note: str | None = None
    logprob: float | None = None  # mean log-probability of the right label, over n_seen


@dataclass(frozen=True)
class MeanResult:
    """A multi-domain score: the unweighted mean over splits of one metric."""

    metric: str
    score: float | None
    per_split: dict[str, EvalResult] = field(default_factory=dict)
    raced: bool = False
    stopped_early: bool = False
    best_possible: float = 0.0
    n_seen: int = 0
    n_total: int = 0
    note: str | None = None
    logprob: float | None = None  # mean over splits of each one's mean log-prob (secondary)


def _as_mapping(splits: Iterable[Split] | Mapping[str, Split]) -> dict[str, Split]:
    if isinstance(splits, Mapping):
        return dict(splits)
    return {split.key: split for split in splits}


class Evaluator:
    """Evaluate a classification model, as it is at call time, on named splits.

    The model is never copied: a merge engine may rewrite its weights in place between calls.
    Each split is tokenized once per process and batched once per evaluator. ``before_split``
    is called with a split's key before its batches run (e.g. to put that task's head in).
    Logits are scored in float32 whatever the model's precision. On a CUDA device
    ``cuda_eval`` (default ``$EVOLVER_OPT_CUDA_EVAL``, else ``eager``) may sum the counts on the
    device and replay CUDA graphs instead (:mod:`evolver_opt.evaluation.cuda_graphs`).

    >>> ev = Evaluator(model, tokenizer, [load_split("vader-tweets", "dev")])  # doctest: +SKIP
    >>> ev.evaluate("vader-tweets/dev", stop_below=0.8).best_possible  # doctest: +SKIP
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        splits: Iterable[Split] | Mapping[str, Split],
        *,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        max_length: int = 128,
        bf16: bool = False,
        padding: str = "bucket",
        seed: int = 0,
        before_split: Callable[[str], None] | None = None,
        cuda_eval: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if padding not in PADDING_MODES:
            raise ConfigError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.splits = _as_mapping(splits)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.max_length = max_length
        self.bf16 = bf16
        self.padding = padding
        self.seed = seed
        self.before_split = before_split
        self._fingerprint = _batches.tokenizer_fingerprint(tokenizer)
        self._batches: dict[str, list[_batches.Batch]] = {}
        # CUDA only: "device" / "graphs" score without a sync per batch (cuda_graphs.py)
        self.cuda_eval = cuda_graphs.resolve_mode(cuda_eval, self.device)
        self._device_scorer: cuda_graphs.DeviceScorer | None = None
        pad_id = tokenizer.pad_token_id
        self._pad_id = 0 if pad_id is None else int(pad_id)

    def batches(self, split_key: str) -> list[_batches.Batch]:
        """The split's batches on the evaluator's device (built once)."""
        if split_key not in self._batches:
            split = self._split(split_key)
            ids = _batches.tokenize(split, self.tokenizer, self.max_length, self._fingerprint)
            built = _batches.make_batches(
                ids,
                split.labels,
                batch_size=self.batch_size,
                pad_id=self._pad_id,
                padding_side=getattr(self.tokenizer, "padding_side", "right"),
                bucketing=self.padding == "bucket",
                pad_to=self.max_length if self.padding == "max_length" else None,
                seed=self.seed,
            )
            self._batches[split_key] = [
                _batches.Batch(
                    *(t.to(self.device) for t in (b.input_ids, b.attention_mask, b.labels, b.index))
                )
                for b in built
            ]
        return self._batches[split_key]

    def n_examples(self, split_keys: Sequence[str]) -> int:
        """How many examples the splits hold together."""
        return sum(len(self._split(k)) for k in split_keys)

    def _split(self, split_key: str) -> Split:
        if split_key not in self.splits:
            raise ConfigError(
                f"unknown split {split_key!r}; this evaluator has {sorted(self.splits)}"
            )
        return self.splits[split_key]

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _logits(self, batch: _batches.Batch) -> torch.Tensor:
        out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        logits = out.logits if hasattr(out, "logits") else out[0]
        return logits.float()

    def _predict(self, batch: _batches.Batch) -> torch.Tensor:
        return self._logits(batch).argmax(dim=-1)

    def predictions(self, split_key: str) -> torch.Tensor:
        """Every example's predicted label, in split order (one full pass; reporting and the
        precision check)."""
        split = self._split(split_key)
        preds = torch.empty(len(split), dtype=torch.long)
        if self.before_split is not None:
            self.before_split(split_key)
        self.model.eval()
        with torch.inference_mode(), self._autocast():
            for batch in self.batches(split_key):
                preds[batch.index.cpu()] = self._predict(batch).cpu()
        return preds

    def evaluate(
        self, split_key: str, stop_below: float | None = None, *, metric: str = "accuracy"
    ) -> EvalResult:
        """Evaluate one split; with ``stop_below``, stop once accuracy cannot reach it.

        Racing is a selection device, so it refuses a test split (``SplitError``); for
        ``macro_f1`` no exact bound exists, so the split is evaluated fully and ``note`` says so.
        """
        mean = self._run([split_key], stop_below, metric)
        return mean.per_split[split_key]

    def dev_score(
        self,
        split_keys: Sequence[str] | None = None,
        stop_below: float | None = None,
        *,
        metric: str = "accuracy",
        stages: Sequence[float] = (1.0,),
        on_stage: StageCallback | None = None,
    ) -> MeanResult:
        """Mean metric over splits, for selection: test splits raise ``SplitError``.

        With ``stop_below`` (accuracy only) evaluation stops once the mean over all splits can
        no longer reach it, counting every unseen example as right. ``stages`` (increasing
        fractions ending with 1) cut every split's batches into nested prefixes run stage by
        stage, tasks interleaved; ``on_stage`` gets the running score after each one (it may
        raise, e.g. ``optuna.TrialPruned``, to stop).
        """
        keys = list(split_keys) if split_keys is not None else list(self.splits)
        for key in keys:
            require_selectable(self._split(key), "a selection score")
        return self._run(keys, stop_below, metric, stages, on_stage)

    def _schedule(
        self, keys: list[str], stages: Sequence[float]
    ) -> list[list[tuple[str, int, int, int]]]:
        """Per stage, the (split key, batch index, first row, end row) pieces it runs: stage s
        holds the examples of every split between fractions ``stages[s - 1]`` and
        ``stages[s]`` of its batch order, so the stages are nested prefixes of each split."""
        plan: list[list[tuple[str, int, int, int]]] = [[] for _ in stages]
        for key in keys:
            sizes = [len(b.labels) for b in self.batches(key)]
            starts = [sum(sizes[:i]) for i in range(len(sizes))]
            n = sum(sizes)
            cuts = [0] + [max(1, round(f * n)) if n else 0 for f in stages]
            for s in range(len(stages)):
                lo, hi = cuts[s], max(cuts[s], cuts[s + 1])
                for b, (first, size) in enumerate(zip(starts, sizes)):
                    a, e = max(lo, first), min(hi, first + size)
                    if a < e:
                        plan[s].append((key, b, a - first, e - first))
        return plan

    def _run(
        self,
        keys: list[str],
        stop_below: float | None,
        metric: str,
        stages: Sequence[float] = (1.0,),
        on_stage: StageCallback | None = None,
    ) -> MeanResult:
        if metric not in metrics.RACEABLE:
            raise ConfigError(
                f"unknown metric {metric!r}; expected one of {sorted(metrics.RACEABLE)}"
            )
        note = None
        racing = stop_below is not None
        if racing:
            for key in keys:
                if self._split(key).name == "test":
                    raise SplitError(
                        f"racing (stop_below) on {key!r} refused: racing serves selection, "
                        "and test splits may not be used for selection"
                    )
            if not metrics.RACEABLE[metric]:
                note = f"racing unavailable for {metric}: it has no exact bound; evaluated fully"
                warnings.warn(note, stacklevel=3)
                racing = False
        if self.cuda_eval != "eager":  # a CUDA device only; CPU always runs the loop below
            return self._run_on_device(keys, stop_below, racing, metric, stages, on_stage, note)
        all_batches = {key: self.batches(key) for key in keys}
        totals = {key: len(self._split(key)) for key in keys}
        correct = dict.fromkeys(keys, 0)
        seen = dict.fromkeys(keys, 0)
        logprob = dict.fromkeys(keys, 0.0)
        preds: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
        stopped = False
        current = None
        self.model.eval()
        plan = self._schedule(keys, stages)
        for stage, work in enumerate(plan):
            with torch.inference_mode(), self._autocast():
                for key, b, lo, hi in work:
                    if key != current and self.before_split is not None:
                        self.before_split(key)
                    current = key
                    batch = all_batches[key][b]
                    if hi - lo < len(batch.labels):
                        batch = batch.rows(lo, hi)
                    logits = self._logits(batch)
                    pred = logits.argmax(dim=-1)
                    correct[key] += int((pred == batch.labels).sum().item())
                    seen[key] += len(batch.labels)
                    right = logits.log_softmax(dim=-1).gather(1, batch.labels[:, None])
                    logprob[key] += float(right.sum())
                    if metric == "macro_f1":
                        preds[key].append(torch.stack([pred.cpu(), batch.labels.cpu()]))
                    if racing:
                        bound = metrics.best_possible_mean(
                            [(correct[k], seen[k], totals[k]) for k in keys]
                        )
                        if bound < stop_below:
                            stopped = True
                            break
            if stopped:
                break
            if on_stage is not None:
                on_stage(
                    stage, self._running(keys, metric, correct, seen, preds), sum(seen.values())
                )
        return self._collect(
            keys, metric, correct, seen, totals, preds, racing, stopped, note, logprob
        )

    def _run_on_device(self, keys, stop_below, racing, metric, stages, on_stage, note):
        """``_run`` with the counts summed on the CUDA device (``cuda_eval`` device/graphs)."""
        if self._device_scorer is None:
            self._device_scorer = cuda_graphs.DeviceScorer(self, self.cuda_eval == "graphs")
        correct, seen, logprob, preds, stopped = self._device_scorer.run(
            keys, stop_below, racing, metric, stages, on_stage
        )
        totals = {key: len(self._split(key)) for key in keys}
        return self._collect(
            keys, metric, correct, seen, totals, preds, racing, stopped, note, logprob
        )

    def _running(self, keys, metric, correct, seen, preds) -> float:
        """The metric over the examples seen so far, averaged over the splits."""
        values = []
        for key in keys:
            if not seen[key]:
                continue
            if metric == "macro_f1":
                pairs = torch.cat(preds[key], dim=1)
                values.append(
                    metrics.macro_f1(
                        pairs[0].tolist(), pairs[1].tolist(), self._split(key).num_labels
                    )
                )
            else:
                values.append(correct[key] / seen[key])
        return sum(values) / len(values) if values else 0.0

    def _collect(
        self, keys, metric, correct, seen, totals, preds, racing, stopped, note, logprob
    ) -> MeanResult:
        per_split = {}
        for key in keys:
            done = seen[key] == totals[key]
            f1 = None
            if metric == "macro_f1" and done:
                pairs = torch.cat(preds[key], dim=1)
                f1 = metrics.macro_f1(
                    pairs[0].tolist(), pairs[1].tolist(), self._split(key).num_labels
                )
            acc = correct[key] / seen[key] if seen[key] else 0.0
            per_split[key] = EvalResult(
                split_key=key,
                accuracy=acc,
                macro_f1=f1,
                n_seen=seen[key],
                n_total=totals[key],
                raced=racing,
                stopped_early=stopped and not done,
                best_possible=metrics.best_possible_accuracy(correct[key], seen[key], totals[key]),
                note=note,
                logprob=logprob[key] / seen[key] if seen[key] else None,
            )
        bound = metrics.best_possible_mean([(correct[k], seen[k], totals[k]) for k in keys])
        stopped = stopped and sum(seen.values()) < sum(totals.values())  # not at the very end
        if stopped:
            score = None
        elif metric == "accuracy":
            score = bound  # every split complete: the bound is the mean accuracy itself
        else:
            score = sum(per_split[k].macro_f1 for k in keys) / len(keys)
        return MeanResult(
            metric=metric,
            score=score,
            per_split=per_split,
            raced=racing,
            stopped_early=stopped,
            best_possible=bound,
            n_seen=sum(seen.values()),
            n_total=sum(totals.values()),
            note=note,
            logprob=None
            if stopped
            else sum(r.logprob or 0.0 for r in per_split.values()) / len(keys),
        )
