"""Exact racing: a raced result never contradicts the full evaluation."""

from __future__ import annotations

import random

import pytest

from evolver_opt.evaluation import Evaluator
from evolver_opt.evaluation.metrics import best_possible_accuracy, best_possible_mean
from tests.evaluation.tiny import BagOfWords, random_split, tiny_bert


def test_bound_arithmetic():
    assert best_possible_accuracy(3, 5, 10) == pytest.approx(0.8)
    assert best_possible_accuracy(7, 10, 10) == pytest.approx(0.7)
    assert best_possible_mean([(3, 5, 10), (0, 0, 4)]) == pytest.approx(0.9)


def test_racing_agrees_with_full_evaluation_on_many_random_cases(tokenizer):
    rng = random.Random(0)
    splits = [random_split(rng.randint(5, 90), seed=100 + i, domain=f"d{i}") for i in range(3)]
    stopped_count = 0
    cases = 0
    for seed in range(40):
        model = BagOfWords(seed=seed)
        batch_size = rng.choice([1, 3, 8, 32])
        ev = Evaluator(model, tokenizer, splits, batch_size=batch_size, max_length=24)
        full = {s.key: ev.evaluate(s.key) for s in splits}
        full_mean = ev.dev_score().score
        for _ in range(6):
            cases += 1
            key = rng.choice(splits).key
            truth = full[key].accuracy
            threshold = rng.choice([truth, truth + 1e-9, truth - 1e-9, rng.random(), 1.0, 0.0])
            raced = ev.evaluate(key, stop_below=threshold)
            assert raced.raced
            if raced.stopped_early:
                stopped_count += 1
                assert truth < threshold <= 1.0
                assert truth <= raced.best_possible < threshold
                assert raced.n_seen < raced.n_total
            else:
                assert raced.accuracy == truth == raced.best_possible
                assert raced.n_seen == raced.n_total
            mean_threshold = rng.choice([full_mean, rng.random()])
            mean = ev.dev_score(stop_below=mean_threshold)
            if mean.stopped_early:
                assert full_mean < mean_threshold and mean.score is None
                assert mean.n_seen < mean.n_total
                assert full_mean <= mean.best_possible < mean_threshold
            else:
                assert mean.score == full_mean
    assert stopped_count > 5  # the races did stop early sometimes
    assert cases == 240


def test_racing_saves_forward_passes_on_a_hopeless_model(tokenizer):
    split = random_split(200, seed=7)
    model = tiny_bert(seed=1)
    ev = Evaluator(model, tokenizer, [split], batch_size=10)
    full = ev.evaluate(split.key)
    raced = ev.evaluate(split.key, stop_below=full.accuracy + 0.2)
    assert raced.stopped_early and raced.n_seen < 200
    # it stopped at the first batch boundary where the bound fell below the threshold
    assert raced.best_possible < full.accuracy + 0.2 <= raced.best_possible + 10 / 200


def test_racing_is_unavailable_for_macro_f1_and_says_so(model, tokenizer, dev_split):
    ev = Evaluator(model, tokenizer, [dev_split])
    with pytest.warns(UserWarning, match="racing unavailable for macro_f1"):
        result = ev.evaluate(dev_split.key, stop_below=0.99, metric="macro_f1")
    assert not result.raced and not result.stopped_early
    assert result.n_seen == result.n_total and result.macro_f1 is not None
    assert "unavailable" in result.note
