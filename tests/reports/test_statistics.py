"""The statistics that rank samplers: known values, scipy on small examples, the gap closed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from evolver_opt.experiments.rows import Row
from evolver_opt.reports.report import markdown, ranking
from evolver_opt.reports.statistics import (
    gap_closed,
    paired_bootstrap,
    rank_samplers,
    t_interval,
    wilcoxon_paired,
)


def test_t_interval_by_hand_and_one_seed():
    # [1, 2, 3]: mean 2, s = 1, t(0.975, df=2) = 4.3027 (the t table): half-width 4.3027 / sqrt 3
    ci = t_interval([1.0, 2.0, 3.0])
    assert ci.mean == 2.0 and ci.n == 3
    assert ci.low == pytest.approx(2 - 2.48414, abs=1e-5)
    assert ci.high == pytest.approx(2 + 2.48414, abs=1e-5)
    # [0.80, 0.84]: mean 0.82, s = 0.02 sqrt 2, t(0.975, 1) = 12.7062: half 12.7062 * 0.02
    ci = t_interval([0.80, 0.84])
    assert (ci.low, ci.high) == pytest.approx((0.82 - 0.254124, 0.82 + 0.254124), abs=1e-5)
    one = t_interval([0.8])
    assert (one.mean, one.low, one.high, one.n) == (0.8, None, None, 1)
    with pytest.raises(ValueError):
        t_interval([])


def test_wilcoxon_matches_scipy_and_its_exact_floor():
    # Differences 2, -1, 2, 3, 4, 4 (in 64ths, exact in floats): ranks 2.5, 1, 2.5, 4, 5.5, 5.5,
    # so W- = 1 (the statistic) and W+ = 20.
    b = np.array([40, 50, 30, 44, 20, 33]) / 64
    a = b + np.array([2, -1, 2, 3, 4, 4]) / 64
    result = wilcoxon_paired(a, b)
    reference = stats.wilcoxon(a, b)
    assert reference.statistic == 1.0
    assert result.test == "wilcoxon" and result.n == 6 and result.differing == 6
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-12)
    assert result.difference == pytest.approx(14 / 6 / 64)
    # Five seeds all better: the exact two-sided p is 2 / 2^5, the smallest five seeds can give.
    five = wilcoxon_paired([0.5, 0.6, 0.7, 0.8, 0.9], [0.4, 0.45, 0.5, 0.55, 0.6])
    assert five.p_value == pytest.approx(0.0625) and five.min_p == pytest.approx(0.0625)
    six = wilcoxon_paired(np.arange(1, 7) / 8, np.zeros(6))
    assert six.p_value == pytest.approx(2 / 64) and six.min_p == pytest.approx(2 / 64)
    # Equal scores reached along different float paths are ties: no difference at all.
    same = wilcoxon_paired([0.1 + 0.2, 0.5], [0.3, 0.5])
    assert same.p_value == 1.0 and same.difference == 0.0 and same.min_p == 1.0
    assert same.n == 2 and same.differing == 0
    # A tied seed is dropped: two differing seeds of three, the exact floor is 2 / 2^2.
    tied = wilcoxon_paired([0.5, 0.7, 0.9], [0.5, 0.6, 0.7])
    assert tied.differing == 2 and tied.min_p == 0.5 and tied.p_value == pytest.approx(0.5)


def test_paired_bootstrap_identical_clearly_better_and_a_few_sentences():
    rng = np.random.default_rng(1)
    model = [rng.integers(0, 2, 150).tolist(), rng.integers(0, 2, 90).tolist()]
    same = paired_bootstrap(model, model)
    assert same.test == "bootstrap" and same.n == 240 and same.resamples == 10_000
    assert same.p_value == 1.0 and same.difference == 0.0 and same.low == same.high == 0.0
    perfect = [[1] * 150, [1] * 90]
    better = paired_bootstrap(perfect, model)
    assert better.p_value < 0.001 and better.difference > 0.3 and better.low > 0
    worse = paired_bootstrap(model, perfect)
    assert worse.p_value < 0.001 and worse.difference == pytest.approx(-better.difference)
    # Three more sentences right out of 200: nothing anyone can rank.
    few = [[1] * 3 + [0] * 197], [[0] * 200]
    assert paired_bootstrap(*few).p_value > 0.05
    # A fixed seed: the same answer twice.
    assert paired_bootstrap(model, perfect) == worse


def test_paired_bootstrap_statistic_is_the_mean_over_splits_and_resamples_examples():
    # Split means 1.0 and 0.5: their mean is 0.75 (the compare's test mean), not pooled 14/24.
    a = [[1, 1, 1, 1], [1] * 10 + [0] * 10]
    b = [[0, 0, 0, 0], [0] * 20]
    assert paired_bootstrap(a, b).difference == pytest.approx(0.75)
    # The spread is that of resampling examples: the standard error of a mean of n differences.
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 2, 400), rng.integers(0, 2, 400)
    result = paired_bootstrap([x.tolist()], [y.tolist()])
    se = np.std(x - y) / np.sqrt(400)
    assert result.high - result.low == pytest.approx(2 * 1.96 * se, rel=0.05)
    with pytest.raises(ValueError):
        paired_bootstrap([[1, 0]], [[1]])


def test_gap_closed_is_zero_for_the_average_and_one_for_the_experts():
    assert gap_closed(0.6, 0.6, 0.8) == 0.0
    assert gap_closed(0.8, 0.6, 0.8) == pytest.approx(1.0)
    assert gap_closed(0.75, 0.6, 0.8) == pytest.approx(0.75)
    assert gap_closed(0.5, 0.6, 0.8) == pytest.approx(-0.5)  # below the average
    assert gap_closed(0.7, 0.8, 0.8) is None  # no gap to close
    assert gap_closed(0.7, None, 0.8) is None


def test_rank_samplers_orders_by_mean_test_and_pairs_with_the_best_other():
    test = {
        "random": {0: 0.70, 1: 0.72, 2: 0.71},
        "evolver": {0: 0.78, 1: 0.80, 2: 0.79},
        "tpe": {0: 0.74, 1: 0.70, 2: 0.75},
    }
    dev = {name: {s: v + 0.01 for s, v in by_seed.items()} for name, by_seed in test.items()}
    ranked = rank_samplers(test, dev, average=0.70, experts=0.90)
    assert [r.name for r in ranked] == ["evolver", "tpe", "random"]
    assert [r.best_other for r in ranked] == ["tpe", "evolver", "evolver"]
    top = ranked[0]
    assert top.n_seeds == 3 and top.test.mean == pytest.approx(0.79)
    assert top.dev.mean == pytest.approx(0.80) and top.test.low < 0.79 < top.test.high
    assert top.gap_closed == pytest.approx(0.45)
    assert top.versus.test == "wilcoxon" and top.versus.n == 3
    assert top.versus.difference == pytest.approx(0.79 - 0.73)
    assert top.versus.p_value == pytest.approx(stats.wilcoxon([0.04, 0.10, 0.04]).pvalue)
    assert ranked[2].versus.difference == pytest.approx(0.71 - 0.79)

    # One seed each: a paired bootstrap over the test examples when they are given, else none.
    single = {"a": {0: 1.0}, "b": {0: 0.5}}
    correct = {"a": {0: [[1, 1, 1, 1]]}, "b": {0: [[1, 0, 1, 0]]}}
    with_examples = rank_samplers(single, single, correct=correct)
    assert with_examples[0].versus.test == "bootstrap" and with_examples[0].versus.n == 4
    assert with_examples[0].test.low is None  # n=1: no interval
    assert rank_samplers(single, single)[0].versus is None
    assert rank_samplers({"a": {0: 0.5}}, {"a": {0: 0.5}})[0].best_other is None


def _row(kind, name, seed, test, test_in, correct=None, dev=0.5):
    return Row(
        kind=kind, name=name, seed=seed, best_dev=dev, test_in=test_in, test_out=None,
        test=test, test_in_domain=["t1", "t2"], test_correct=correct or {},
    )  # fmt: skip


def test_the_report_ranks_with_the_experts_own_tasks_and_the_average():
    rows = [
        _row("sampler", "evolver", 0, {"t1": 0.75, "t2": 0.75}, 0.75,
             {"t1": "1110", "t2": "1101"}),
        _row("sampler", "random", 0, {"t1": 0.5, "t2": 0.5}, 0.5, {"t1": "1100", "t2": "0101"}),
        _row("static", "average", None, {"t1": 0.6, "t2": 0.4}, 0.5),
        _row("expert", "t1", None, {"t1": 0.9, "t2": 0.3}, 0.6),
        _row("expert", "t2", None, {"t1": 0.2, "t2": 0.7}, 0.45),
    ]  # fmt: skip
    result = ranking(rows)
    assert result.tasks == ["t1", "t2"]
    assert result.average == 0.5 and result.experts == pytest.approx(0.8)  # (0.9 + 0.7) / 2
    assert [s.name for s in result.samplers] == ["evolver", "random"]
    assert result.samplers[0].gap_closed == pytest.approx(0.25 / 0.3)
    assert result.samplers[1].gap_closed == pytest.approx(0.0)
    assert result.samplers[0].versus.test == "bootstrap" and result.samplers[0].versus.n == 8
    assert result.samplers[0].versus.difference == pytest.approx(0.25)
    gaps = {(g["kind"], g["name"]): g["gap_closed"] for g in result.references}
    assert gaps[("static", "average")] == 0.0
    assert gaps[("expert", "t1")] == pytest.approx(1 / 3)
    text = markdown(rows, title="t", command="c")
    assert "## Ranking" in text and "| 1 | evolver | 1 | 0.7500 | n=1 |" in text
    assert "(bootstrap, 8 test examples)" in text and "| 0.83 | random | +0.2500 |" in text
    assert "| static | average | 0.5000 | 0.5000 | - | 0.00 |" in text

    no_average = ranking([r for r in rows if r.kind != "static"])
    assert no_average.average is None and no_average.samplers[0].gap_closed is None
    assert "no uniform-average row: no gap closed" in no_average.notes


def test_the_headline_says_where_evolver_stands_and_when_no_search_beats_the_best_static():
    from evolver_opt.reports.report import headline

    rows = [
        _row("sampler", "random", 0, {"t1": 0.75, "t2": 0.75}, 0.75,
             {"t1": "1110", "t2": "1101"}),
        _row("sampler", "evolver-plus", 0, {"t1": 0.5, "t2": 0.5}, 0.5,
             {"t1": "1100", "t2": "0101"}),
        _row("static", "average", None, {"t1": 0.6, "t2": 0.4}, 0.5),
        _row("static", "iso_cts(dev grid)", None, {"t1": 0.8, "t2": 0.8}, 0.8),
        _row("expert", "t1", None, {"t1": 0.9, "t2": 0.3}, 0.6),
        _row("expert", "t2", None, {"t1": 0.2, "t2": 0.7}, 0.45),
    ]  # fmt: skip
    text = headline(rows)
    assert "The best search by test mean, random, reached 0.7500" in text
    assert "iso_cts(dev grid), reached 0.8000" in text and "no search beat it on test" in text
    assert "Evolver (evolver-plus) reached 0.5000, 0.2500 behind random (p = " in text
    assert "each expert alone" not in text  # a form's start points are not the experts
    ahead = headline([r for r in rows if r.name != "iso_cts(dev grid)"])
    assert "no search beat it" not in ahead
