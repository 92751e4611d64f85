from __future__ import annotations

import numpy as np
import pytest
import torch

from evolver_opt.errors import ConfigError, SplitError
from evolver_opt.evaluation import Evaluator, accuracy, macro_f1
from evolver_opt.evaluation import batches as B
from tests.evaluation.tiny import random_split, tiny_bert


def reference_predictions(model, tokenizer, split, max_length=128):
    """One example at a time, no padding: the ground truth the evaluator must match."""
    preds = []
    with torch.no_grad():
        for text in split.texts:
            enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
            preds.append(int(model(**enc).logits.argmax(-1)))
    return preds


def test_accuracy_matches_unbatched_reference_in_every_padding_mode(model, tokenizer, dev_split):
    preds = reference_predictions(model, tokenizer, dev_split, max_length=32)
    for padding in ("bucket", "dynamic", "max_length"):
        ev = Evaluator(model, tokenizer, [dev_split], batch_size=16, max_length=32, padding=padding)
        result = ev.evaluate(dev_split.key, metric="macro_f1")
        n = len(dev_split)
        assert result.accuracy == pytest.approx(accuracy(preds, dev_split.labels), abs=1.5 / n)
        assert result.macro_f1 == pytest.approx(macro_f1(preds, dev_split.labels, 2), abs=0.02)
        assert (result.n_seen, result.n_total) == (n, n)
        assert not (result.raced or result.stopped_early)


def test_macro_f1_by_hand():
    # label 0: tp=1 fp=1 fn=1 -> 0.5; label 1: tp=1 fp=1 fn=1 -> 0.5; label 2: tp=1 -> 1.0
    assert macro_f1([0, 1, 1, 0, 2], [0, 0, 1, 1, 2], 3) == pytest.approx(2.0 / 3.0)
    assert macro_f1([0, 0], [0, 0], 2) == pytest.approx(1.0)  # label 1: absent, not predicted


def test_macro_f1_averages_over_the_labels_present_or_predicted():
    # 77 labels, a sample holding 3 of them: a perfect model scores 1 (it was 3/77)
    gold = [5, 12, 12, 40]
    assert macro_f1(gold, gold, 77) == pytest.approx(1.0)
    # a wrongly predicted label that no target has counts (F1 0), as in scikit-learn
    # (f1_score(gold, preds, average="macro") with labels=None): labels 5, 12 score 1; 40, 70 0
    assert macro_f1([5, 12, 12, 70], [5, 12, 12, 40], 77) == pytest.approx((2 + 0) / 4)
    assert macro_f1([5, 12, 40, 40], [5, 12, 12, 40], 77) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert macro_f1([], [], 77) == 0.0


def test_bucketing_pads_less_and_covers_every_example_once(tokenizer, dev_split):
    ids = B.tokenize(dev_split, tokenizer, 64, B.tokenizer_fingerprint(tokenizer))
    kwargs = {"batch_size": 16, "pad_id": 0}
    bucketed = B.make_batches(ids, dev_split.labels, bucketing=True, **kwargs)
    plain = B.make_batches(ids, dev_split.labels, bucketing=False, **kwargs)
    for batches in (bucketed, plain):
        index = torch.cat([b.index for b in batches]).tolist()
        assert sorted(index) == list(range(len(dev_split)))
        for b in batches:
            assert b.input_ids.shape[1] == int(b.attention_mask.sum(1).max())
            assert b.labels.tolist() == [dev_split.labels[i] for i in b.index.tolist()]
    cells = lambda bs: sum(b.input_ids.numel() for b in bs)
    real = sum(len(x) for x in ids)
    assert real <= cells(bucketed) < cells(plain)


def test_left_padding_puts_tokens_at_the_end():
    (batch,) = B.make_batches(
        [[5, 6], [7]], [0, 1], batch_size=2, pad_id=0, padding_side="left", bucketing=False
    )
    assert batch.input_ids.tolist() == [[5, 6], [0, 7]]
    assert batch.attention_mask.tolist() == [[1, 1], [0, 1]]


class CountingTokenizer:
    """Forwards to a tokenizer and counts how often it is called."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_tokenization_happens_once_per_process(model, tokenizer):
    split = random_split(40, seed=99, domain="cache-test")
    counting = CountingTokenizer(tokenizer)
    B.clear_cache()
    first = Evaluator(model, counting, [split], batch_size=8)
    first.evaluate(split.key)
    first.evaluate(split.key)
    second = Evaluator(tiny_bert(seed=3), counting, [split], batch_size=4)
    second.evaluate(split.key)
    assert counting.calls == 1
    Evaluator(model, counting, [split], max_length=7).evaluate(split.key)
    assert counting.calls == 2  # a different max_length is a different tokenization


def test_model_is_evaluated_as_it_is_at_call_time(model, tokenizer, dev_split):
    ev = Evaluator(model, tokenizer, [dev_split], batch_size=32)
    ev.evaluate(dev_split.key)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([5.0, -5.0]))
    expected = float(np.mean(np.asarray(dev_split.labels) == 0))
    assert ev.evaluate(dev_split.key).accuracy == pytest.approx(expected)


def test_test_split_refused_for_racing_and_selection(model, tokenizer):
    test = random_split(30, seed=5, name="test")
    dev = random_split(30, seed=6, name="dev")
    ev = Evaluator(model, tokenizer, [dev, test])
    assert ev.evaluate(test.key).n_seen == 30  # reporting a test split is fine
    with pytest.raises(SplitError, match="selection"):
        ev.evaluate(test.key, stop_below=0.5)
    with pytest.raises(SplitError, match="selection"):
        ev.dev_score([dev.key, test.key])
    assert ev.dev_score([dev.key]).score == ev.evaluate(dev.key).accuracy


def test_bad_arguments_raise_config_errors(model, tokenizer, dev_split):
    with pytest.raises(ConfigError, match="padding"):
        Evaluator(model, tokenizer, [dev_split], padding="none")
    ev = Evaluator(model, tokenizer, [dev_split])
    with pytest.raises(ConfigError, match="unknown split"):
        ev.evaluate("syn/train")
    with pytest.raises(ConfigError, match="metric"):
        ev.evaluate(dev_split.key, metric="auc")
