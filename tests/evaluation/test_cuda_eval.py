"""CUDA dev scoring (cuda_graphs.py): counts on the device, graph replay; the same scores.

On CPU the evaluator always runs its own loop; the ``device`` scorer's bookkeeping (stages,
racing at split boundaries, macro-F1) is checked here on CPU against that loop. The tests
marked ``gpu`` check graph capture and replay on a CUDA device.
"""

from __future__ import annotations

import random

import pytest
import torch

from evolver_opt.errors import ConfigError
from evolver_opt.evaluation import Evaluator
from evolver_opt.evaluation.cuda_graphs import ENV, DeviceScorer, resolve_mode
from tests.evaluation.tiny import BagOfWords, random_split, tiny_bert

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cpu_always_runs_the_eager_loop(monkeypatch, tokenizer):
    monkeypatch.setenv(ENV, "graphs")
    assert resolve_mode(None, torch.device("cpu")) == "eager"
    assert resolve_mode("graphs", torch.device("cpu")) == "eager"
    monkeypatch.setenv(ENV, "nonsense")  # not even read on CPU
    ev = Evaluator(BagOfWords(seed=0), tokenizer, [random_split(5, seed=0)])
    assert ev.cuda_eval == "eager" and ev._device_scorer is None
    cuda_device = torch.device("cuda")  # a device object needs no GPU
    with pytest.raises(ConfigError, match="EVOLVER_OPT_CUDA_EVAL"):
        resolve_mode(None, cuda_device)
    monkeypatch.setenv(ENV, "graphs")
    assert resolve_mode(None, cuda_device) == "graphs"
    assert resolve_mode("device", cuda_device) == "device"
    with pytest.raises(ConfigError, match="CUDA graphs"):
        DeviceScorer(ev, graphs=True)


def _same(a, b, *, kernels_may_differ: bool = False) -> None:
    """Two MeanResults agree in everything but how often the race was checked.

    ``kernels_may_differ``: a captured forward may take another attention kernel than the
    eager one (transformers skips an all-ones mask outside a capture), so log-probabilities
    agree to rounding and a near-tie may flip one prediction."""
    assert (a.stopped_early, a.n_total, a.metric) == (b.stopped_early, b.n_total, b.metric)
    for key, r in a.per_split.items():
        o = b.per_split[key]
        assert r.n_seen == o.n_seen, key
        if not kernels_may_differ:
            assert (r.accuracy, r.macro_f1) == (o.accuracy, o.macro_f1), key
            assert r.logprob == pytest.approx(o.logprob, rel=1e-12, abs=1e-12)
        else:
            assert abs(r.accuracy - o.accuracy) <= 1.01 / r.n_total, key
            assert r.logprob == pytest.approx(o.logprob, rel=2e-2, abs=1e-3)
    if not kernels_may_differ:
        assert a.score == b.score


def _device_twin(ev: Evaluator) -> Evaluator:
    """The same evaluator (same batches) scoring through the device scorer."""
    twin = Evaluator(ev.model, ev.tokenizer, ev.splits, batch_size=ev.batch_size,
                     max_length=ev.max_length, before_split=ev.before_split)  # fmt: skip
    twin.cuda_eval = "device"  # what a CUDA device would resolve; here on CPU
    return twin


def _recorder(into: list):
    return lambda *report: into.append(report)


def test_device_scorer_matches_the_eager_loop(tokenizer):
    rng = random.Random(0)
    splits = [random_split(rng.randint(5, 70), seed=10 + i, domain=f"d{i}") for i in range(3)]
    switched, stops = [], 0
    for seed in range(8):
        ev = Evaluator(BagOfWords(seed=seed), tokenizer, splits, batch_size=rng.choice([3, 8, 32]),
                       max_length=24, before_split=switched.append)  # fmt: skip
        twin = _device_twin(ev)
        for metric in ("accuracy", "macro_f1"):
            _same(ev.dev_score(metric=metric), twin.dev_score(metric=metric))
        reports: dict[str, list] = {"eager": [], "device": []}
        for name, e in (("eager", ev), ("device", twin)):
            r = e.dev_score(stages=(0.25, 0.5, 1.0), on_stage=_recorder(reports[name]))
            assert r.score == ev.dev_score().score
        assert reports["eager"] == reports["device"]  # the pruner sees the same reports
        full = ev.dev_score().score
        for threshold in (full, full + 1e-9, full + 0.05, 1.0, rng.random()):
            eager, device = ev.dev_score(stop_below=threshold), twin.dev_score(stop_below=threshold)
            if device.stopped_early:  # checked at split boundaries: later, still exact
                stops += 1
                assert eager.stopped_early
                assert full <= device.best_possible < threshold
                assert eager.n_seen <= device.n_seen < device.n_total
            elif eager.stopped_early:  # the eager loop stopped in the last split
                assert device.score == full < threshold and device.n_seen == device.n_total
            else:
                _same(eager, device)
    assert stops > 5  # the device scorer's races did stop early
    assert {s.key for s in splits} <= set(switched)  # heads switched per split as before


def test_device_scorer_sees_weights_written_in_place(tokenizer):
    model = tiny_bert(seed=0)
    split = random_split(40, seed=3)
    ev = Evaluator(model, tokenizer, [split], batch_size=16)
    twin = _device_twin(ev)
    for seed in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
        _same(ev.dev_score(), twin.dev_score())


def test_refresh_copies_swapped_storage_where_the_graphs_read():
    """What a captured graph reads stays the model's: a head swapped into new storage is
    copied back into the captured storage; a changed dtype or shape asks for a new capture."""
    from evolver_opt.evaluation.cuda_graphs import _Captured, _model_tensors, _refresh

    model = tiny_bert(seed=0, num_labels=3)
    captured = _Captured(_model_tensors(model))
    held = {id(t): t for _, _, t in captured.tensors}
    read_by_graph = model.classifier.weight.detach()  # the storage a capture would read
    assert id(read_by_graph) not in held and any(
        t.data_ptr() == read_by_graph.data_ptr() for t in held.values()
    )
    new_head = torch.randn(3, 32)
    model.classifier.weight.data = new_head.clone()  # as use_head does for another label count
    assert _refresh(captured)
    assert torch.equal(read_by_graph, new_head)  # copied where the graph reads
    with torch.no_grad():
        model.classifier.weight.add_(1.0)  # written in place in the swapped-in storage
    assert _refresh(captured) and torch.equal(read_by_graph, new_head + 1.0)
    model.classifier.weight.data = torch.zeros(5, 32)  # another label count: capture again
    assert not _refresh(captured)
    model.classifier.weight.data = new_head.to(torch.bfloat16)
    assert not _refresh(captured)


# -- graphs on a CUDA device -------------------------------------------------------------
def _cuda_evaluators(tokenizer, splits, heads=None, **kwargs):
    model = tiny_bert(seed=0, num_labels=3).to("cuda")
    before = None
    if heads is not None:

        def before(key):  # a task head swapped in as new storage each time, like use_head
            w, b = heads[key]
            dtype = model.bert.embeddings.word_embeddings.weight.dtype
            model.classifier.weight.data = w.to(dtype, copy=True)
            model.classifier.bias.data = b.to(dtype, copy=True)

    made = {
        mode: Evaluator(
            model,
            tokenizer,
            splits,
            batch_size=16,
            device="cuda",
            before_split=before,
            cuda_eval=mode,
            **kwargs,
        )
        for mode in ("eager", "device", "graphs")
    }
    return model, made


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("bf16", [False, True])
def test_graphs_score_as_the_eager_loop(tokenizer, bf16):
    splits = [
        random_split(37 + 11 * i, seed=20 + i, domain=f"d{i}", num_labels=3) for i in range(3)
    ]
    model, evs = _cuda_evaluators(tokenizer, splits, bf16=bf16)
    for seed in range(3):  # weights rewritten in place between trials, as a merge does
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        eager = evs["eager"].dev_score()
        for mode in ("device", "graphs"):
            _same(eager, evs[mode].dev_score(), kernels_may_differ=True)
            staged = evs[mode].dev_score(stages=(0.25, 0.5, 1.0))
            _same(eager, staged, kernels_may_differ=True)
    scorer = evs["graphs"]._device_scorer
    assert scorer.graphs and scorer.captures == sum(
        len(evs["graphs"].batches(s.key)) for s in splits
    )


@pytest.mark.gpu
@cuda
def test_graphs_follow_heads_swapped_into_new_storage(tokenizer):
    gen = torch.Generator().manual_seed(0)
    splits = [random_split(30, seed=40 + i, domain=f"d{i}", num_labels=3) for i in range(3)]
    heads = {s.key: (torch.randn(3, 32, generator=gen).cuda(), torch.randn(3, generator=gen).cuda())
             for s in splits}  # fmt: skip
    model, evs = _cuda_evaluators(tokenizer, splits, heads=heads)
    for _ in range(2):
        eager = evs["eager"].dev_score()
        _same(eager, evs["graphs"].dev_score(), kernels_may_differ=True)
    captures = evs["graphs"]._device_scorer.captures
    model.to(torch.bfloat16)  # another dtype: the graphs are captured again
    _same(evs["eager"].dev_score(), evs["graphs"].dev_score(), kernels_may_differ=True)
    assert evs["graphs"]._device_scorer.captures == 2 * captures
