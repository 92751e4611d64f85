"""Statistics that rank samplers: intervals over seeds, paired tests, the fraction of the gap
closed.

Pure functions over plain numbers (no rows, no models). ``compare`` feeds them through
:func:`evolver_opt.reports.report.ranking`:

- :func:`t_interval`: mean and Student-t confidence interval over seeds (none for one seed);
- :func:`wilcoxon_paired`: Wilcoxon signed-rank over seeds, paired by seed;
- :func:`paired_bootstrap`: paired bootstrap over test examples, for single runs;
- :func:`gap_closed`: ``(score - average) / (experts - average)``;
- :func:`rank_samplers`: all of it per sampler, each against the best other sampler.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Scores computed along different paths (a mean over splits) may differ in the last bits while
# being the same counts of right answers: paired differences are rounded to this many decimals,
# so equal ones tie and a zero is a zero.
_DECIMALS = 12
_TIE = 10.0**-_DECIMALS


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values and its confidence interval (``low``/``high`` None for n=1)."""

    mean: float
    low: float | None
    high: float | None
    n: int
    confidence: float = 0.95


@dataclass(frozen=True)
class Paired:
    """A paired comparison of A with B: ``difference`` is A - B (positive: A is better).

    ``test`` is ``"wilcoxon"`` (``n`` paired seeds, ``differing`` of them with a non-zero
    difference; ``min_p`` the smallest two-sided p the exact test can give with those) or ``"bootstrap"`` (``n`` test
    examples; ``low``/``high`` the percentile interval of the difference)."""

    test: str
    difference: float
    p_value: float
    n: int
    min_p: float | None = None
    differing: int | None = None
    low: float | None = None
    high: float | None = None
    resamples: int | None = None


@dataclass(frozen=True)
class SamplerRank:
    """One sampler's line of the ranking, ``versus`` its best other sampler (by mean test)."""

    name: str
    n_seeds: int
    test: Interval
    dev: Interval
    gap_closed: float | None
    best_other: str | None
    versus: Paired | None


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and two-sided Student-t interval: mean +- t(1-a/2, n-1) * s / sqrt(n), s with ddof=1.

    With one value there is no interval (``low``/``high`` None): report it as n=1."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("t_interval needs at least one value")
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, None, None, 1, confidence)
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return Interval(mean, mean - half, mean + half, int(x.size), confidence)


def wilcoxon_paired(a: Sequence[float], b: Sequence[float]) -> Paired:
    """Wilcoxon signed-rank test (two-sided) of ``a[i] - b[i]``, pairs by seed.

    Differences are rounded to 12 decimals (equal ones tie) and zero differences are dropped
    (scipy's ``zero_method="wilcox"``); all-zero gives p = 1. The
    p-value is scipy's, as computed: with n non-zero pairs the exact test cannot go below
    ``2 / 2**n`` (n=5: 0.0625), which ``min_p`` states. ``difference`` is the mean of the
    paired differences."""
    from scipy import stats

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(
            f"wilcoxon_paired needs two equal, non-empty sequences: {x.size}, {y.size}"
        )
    d = np.round(x - y, _DECIMALS) + 0.0  # + 0.0: no negative zero
    nonzero = int(np.count_nonzero(d))
    p = 1.0 if nonzero == 0 else float(stats.wilcoxon(d, zero_method="wilcox").pvalue)
    min_p = min(1.0, 2.0 / 2**nonzero) if nonzero else 1.0
    return Paired("wilcoxon", float(d.mean()), p, int(d.size), min_p=min_p, differing=nonzero)


def paired_bootstrap(
    a: Sequence[Sequence[float]],
    b: Sequence[Sequence[float]],
    *,
    resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Paired:
    """Paired bootstrap over test examples of two models' per-example scores (1/0: correct).

    ``a[k][j]`` is model A's score on example j of test split k; ``b`` likewise, on the same
    examples. The statistic is the difference of the mean over splits of the per-split mean
    (the compare's test mean), and examples are resampled with replacement within each split.
    Resampling n examples only counts how often each distinct difference value is drawn, so it
    is drawn as a multinomial over those values: the same distribution as resampling indices,
    at a cost independent of n. Two-sided p against no difference (the bootstrap distribution
    shifted to mean zero): ``(1 + #{|t* - t| >= |t|}) / (1 + resamples)``; identical models
    give 1."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_bootstrap needs the same, non-empty splits: {len(a)}, {len(b)}")
    rng = np.random.default_rng(seed)
    boot = np.zeros(resamples)
    observed = 0.0
    n = 0
    for k, (sa, sb) in enumerate(zip(a, b, strict=True)):
        if len(sa) != len(sb) or len(sa) == 0:
            raise ValueError(f"split {k}: {len(sa)} and {len(sb)} examples; need equal, >0")
        d = np.asarray(sa, dtype=float) - np.asarray(sb, dtype=float)
        values, counts = np.unique(d, return_counts=True)
        draws = rng.multinomial(d.size, counts / d.size, size=resamples)  # (resamples, values)
        boot += draws @ values / d.size
        observed += float(d.mean())
        n += d.size
    boot /= len(a)
    observed /= len(a)
    extreme = np.count_nonzero(np.abs(boot - observed) >= abs(observed) - _TIE)
    p = float((1 + extreme) / (1 + resamples))
    low, high = np.quantile(boot, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return Paired(
        "bootstrap", observed, p, n, low=float(low), high=float(high), resamples=resamples
    )


def gap_closed(score: float | None, average: float | None, experts: float | None) -> float | None:
    """The fraction of the gap closed: (score - average) / (experts - average).

    0 is the uniform average, 1 the experts each on its own task; None when a term is missing
    or the average is not below the experts (no gap to close)."""
    if score is None or average is None or experts is None or experts - average <= _TIE:
        return None
    return (score - average) / (experts - average)


def rank_samplers(
    test: Mapping[str, Mapping[int, float]],
    dev: Mapping[str, Mapping[int, float]],
    *,
    average: float | None = None,
    experts: float | None = None,
    correct: Mapping[str, Mapping[int, Sequence[Sequence[float]]]] | None = None,
    resamples: int = 10_000,
    seed: int = 0,
) -> list[SamplerRank]:
    """Rank samplers by mean test score over seeds, best first.

    ``test[name][seed]``: the test mean of the best-by-dev model of that study; ``dev`` its best
    dev score. Each sampler is compared with the best *other* sampler by mean test, paired by
    seed: Wilcoxon over the seeds both have when there are at least two, else (single runs) a
    paired bootstrap over test examples when ``correct[name][seed]`` holds both models'
    per-example scores by split (:func:`paired_bootstrap`), else no test (``versus`` None).
    ``average`` and ``experts`` are the test means that :func:`gap_closed` needs."""
    correct = correct or {}
    means = {name: float(np.mean(list(by_seed.values()))) for name, by_seed in test.items()}
    order = sorted(means, key=lambda name: -means[name])  # stable: ties keep the given order
    out = []
    for name in order:
        others = [o for o in order if o != name]
        other = others[0] if others else None
        versus = None
        if other is not None:
            seeds = sorted(set(test[name]) & set(test[other]))
            if len(seeds) >= 2:
                versus = wilcoxon_paired(
                    [test[name][s] for s in seeds], [test[other][s] for s in seeds]
                )
            elif len(seeds) == 1:
                mine = correct.get(name, {}).get(seeds[0])
                theirs = correct.get(other, {}).get(seeds[0])
                if mine and theirs:
                    versus = paired_bootstrap(mine, theirs, resamples=resamples, seed=seed)
        out.append(
            SamplerRank(
                name=name,
                n_seeds=len(test[name]),
                test=t_interval(list(test[name].values())),
                dev=t_interval(list(dev[name].values())),
                gap_closed=gap_closed(means[name], average, experts),
                best_other=other,
                versus=versus,
            )
        )
    return out
