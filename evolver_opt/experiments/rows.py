"""What a compare reports: one :class:`Row` per sampler seed, static merge or expert, and the
:class:`TestReporter` that scores a row's model on the test splits (reporting only, never
selection)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from evolver_opt.data.reporting import load_test_split
from evolver_opt.errors import ConfigError
from evolver_opt.evaluation import Evaluator, metrics
from evolver_opt.merge.checkpoints import label_space
from evolver_opt.search.objective import MergeSetup


@dataclass
class Row:
    """One line of the compare report."""

    kind: str  # "sampler", "static" or "expert"
    name: str
    seed: int | None
    best_dev: float
    test_in: float | None
    test_out: float | None
    test: dict[str, float] = field(default_factory=dict)
    trials: int = 0
    wall_s: float = 0.0  # seconds inside the study's finished trials (their durations, summed)
    study_name: str | None = None
    curve: list[float] = field(default_factory=list)  # best-so-far dev by trial
    examples: list[int] = field(default_factory=list)  # cumulative dev examples evaluated
    peak_rss_mb: float | None = None  # the study's peak resident memory (experiments/memory.py)
    test_in_domain: list[str] = field(default_factory=list)  # the test keys test_in averages
    # Per test split, each example's correctness ("1"/"0", the split's order): the paired
    # bootstrap of single runs (reports/statistics.py). Kept when the metric is accuracy.
    test_correct: dict[str, str] = field(default_factory=dict)
    # The answer's dev score re-scored in float32 (the study scored in bfloat16), else None.
    best_dev_fp32: float | None = None
    pruned: int = 0  # trials stopped by the study's pruner (staged dev scoring)
    race_lost: int = 0  # Evolver offspring stopped by exact racing against their parent
    examples_saved: float = 0.0  # fraction of the trials' dev forward passes not run
    # Static rows tuned on dev (experiments/baselines.py): the chosen parameters, and every grid
    # point's parameters and dev score.
    params: dict[str, Any] = field(default_factory=dict)
    grid: list[dict[str, Any]] = field(default_factory=list)


class TestReporter:
    """Scores the working model, as it is now, on the study's test splits (reporting only)."""

    def __init__(self, setup: MergeSetup) -> None:

        config = setup.config
        self.setup = setup
        self.in_domain = list(config.test_in_domain)
        self.out_of_domain = list(config.test_out_of_domain)
        splits = [
            load_test_split(d).subset(config.test_per_split)
            for d in dict.fromkeys(self.in_domain + self.out_of_domain)
        ]
        self.head_of = heads_for_splits(setup.engine, splits)
        ev = config.evaluation
        self.evaluator = Evaluator(
            setup.engine.model, setup.tokenizer, splits, batch_size=ev.batch_size, device=ev.device,
            max_length=ev.max_length,
        )  # fmt: skip

    def __call__(self) -> dict[str, float]:
        return self.score()[0]

    def score(self) -> tuple[dict[str, float], dict[str, str]]:
        """Scores by task key, and (metric accuracy) each example's correctness as "1"/"0"."""
        scores, correct = {}, {}
        for key in self.evaluator.splits:
            domain = key.split("/")[0]
            if key in self.head_of:
                self.setup.engine.use_head(self.head_of[key])
            scores[domain], hits = self._score_split(key)
            if self.setup.config.metric == "accuracy":
                correct[domain] = "".join("1" if h else "0" for h in hits)
        return scores, correct

    def _score_split(self, key: str) -> tuple[float, np.ndarray]:
        """One pass over a test split: the metric and per-example correctness, in split order.

        The same batches, precision and predictions as ``Evaluator.evaluate`` (a full pass, no
        racing), so the score is the one it gives; the correctness costs no second pass."""

        ev = self.evaluator
        split = ev.splits[key]
        pred, labels = ev.predictions(key).numpy(), np.asarray(split.labels)
        hits = pred == labels
        if self.setup.config.metric == "accuracy":
            return int(hits.sum()) / len(split) if len(split) else 0.0, hits
        return metrics.macro_f1(pred.tolist(), labels.tolist(), split.num_labels), hits

    def summarize(self, scores: dict[str, float]) -> tuple[float | None, float | None]:
        def mean(domains: list[str]) -> float | None:
            return float(np.mean([scores[d] for d in domains])) if domains else None

        return mean(self.in_domain), mean(self.out_of_domain)


def heads_for_splits(engine: Any, splits: Sequence[Any]) -> dict[str, str]:
    """With separate heads, the expert whose head scores each split: the expert of the same
    name, else the first expert (engine order) whose label space is the split's, so an
    out-of-domain split is scored by the head of its own labels (e.g. the UCI sentiment sets
    by the movie-sentiment expert's). Refused when no expert has the split's labels."""
    if engine.heads_merged:
        return {}
    spaces = {
        name: label_space(ckpt.config)
        for name, ckpt in zip(engine.model_names, engine.checkpoints.models)
    }
    out = {}
    for split in splits:
        if split.domain in spaces:
            out[split.key] = split.domain
            continue
        same = [name for name, labels in spaces.items() if labels == tuple(split.label_names)]
        if not same:
            raise ConfigError(
                f"test split {split.key!r} has labels {list(split.label_names)[:6]}, and no "
                f"expert's head has that label space ({ {n: list(v)[:3] for n, v in spaces.items()} }); "
                "with separate heads, an out-of-domain split needs an expert of the same labels"
            )
        out[split.key] = same[0]
    return out


def rows_as_json(rows: Sequence[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
