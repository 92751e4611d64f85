"""MergeEngine: exactness, the task-arithmetic formula, layout, in-place writes, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evolver_opt.errors import ConfigError
from evolver_opt.merge import MergeEngine
from evolver_opt.merge.checkpoints import load_checkpoints

from .conftest import load_reference

GRANULARITIES = ("model", "layer", "tensor")


def _state(path, cls):
    return load_reference(path, cls).state_dict()


def _outputs(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_one_hot_reproduces_each_model_exactly(family, granularity):
    engine = MergeEngine.from_dirs(family.base, family.models, granularity=granularity)
    for i, path in enumerate(family.models):
        engine.apply(engine.one_hot(i))
        ref = load_reference(path, family.cls)
        for name, tensor in ref.state_dict().items():
            assert torch.equal(engine.model.state_dict()[name], tensor), name
        assert torch.equal(_outputs(engine.model, family.inputs), _outputs(ref, family.inputs))


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_apply_matches_direct_per_tensor_formula(family, granularity):
    engine = MergeEngine.from_dirs(family.base, family.models, granularity=granularity)
    rng = np.random.default_rng(3)
    c = rng.uniform(-0.5, 1.5, size=(engine.n_models, engine.n_groups))
    engine.apply(c)
    base = _state(family.base, family.cls)
    models = [_state(p, family.cls) for p in family.models]
    merged = engine.model.state_dict()
    for slot in engine.slots():
        expected = base[slot.name].clone()
        for i, m in enumerate(models):
            expected += c[i, slot.group] * (m[slot.name] - base[slot.name])
        torch.testing.assert_close(merged[slot.name], expected, rtol=1e-5, atol=1e-6)
        assert engine.group_names[slot.group] in {"all", slot.name} | set(engine.group_names)
    assert not any(torch.isnan(t).any() for t in merged.values())


def test_layout_names_and_groups(families):
    bert = families["bert"]
    layer = MergeEngine.from_dirs(bert.base, bert.models, granularity="layer")
    assert layer.group_names == [
        "embeddings",
        "bert.encoder.layer.0",
        "bert.encoder.layer.1",
        "bert.pooler",
        "head",
    ]
    assert layer.param_names[:2] == ["w.ft0.embeddings", "w.ft0.bert.encoder.layer.0"]
    assert len(layer.param_names) == layer.n_models * layer.n_groups == 15
    t5 = families["t5"]
    tensor = MergeEngine.from_dirs(t5.base, t5.models, granularity="tensor")
    assert all(len(n) < 512 for n in tensor.param_names)
    assert tensor.param_names[0] == "w.ft0.shared.weight"
    # tied weights are merged once: the shared embedding is one group, the aliases one parameter
    assert not any("embed_tokens" in g or g.startswith("lm_head") for g in tensor.group_names)
    model = tensor.model
    assert model.lm_head.weight is model.shared.weight is model.encoder.embed_tokens.weight


def test_parameters_are_views_of_one_buffer_and_apply_is_in_place(families):
    fam = families["llama"]
    engine = MergeEngine.from_dirs(fam.base, fam.models, granularity="tensor")
    out = engine.output
    lo, hi = out.data_ptr(), out.data_ptr() + out.numel() * out.element_size()
    params = list(engine.model.parameters())
    assert all(lo <= p.data_ptr() < hi for p in params)
    assert sum(p.numel() for p in params) == out.numel()
    model, ptrs = engine.model, [p.data_ptr() for p in params]
    engine.apply(engine.uniform())
    assert engine.model is model
    assert [p.data_ptr() for p in engine.model.parameters()] == ptrs
    # memory: N + 1 stacked rows and one output, nothing else of model size
    assert engine.stacked.shape == (engine.n_models + 1, out.numel())


def test_uniform_is_the_average_and_mapping_equals_array(families):
    fam = families["bert"]
    engine = MergeEngine.from_dirs(fam.base, fam.models, granularity="layer")
    c = np.random.default_rng(0).uniform(size=(engine.n_models, engine.n_groups))
    engine.apply(c)
    by_array = engine.output.clone()
    engine.apply(dict(zip(engine.param_names, c.ravel().tolist())) | {"other_param": 3})
    assert torch.equal(engine.output, by_array)
    engine.apply(engine.uniform())
    models = [_state(p, fam.cls) for p in fam.models]
    for slot in engine.slots():
        avg = sum(m[slot.name] for m in models) / 3
        torch.testing.assert_close(slot.out, avg, rtol=1e-5, atol=1e-6)


def test_bad_coefficients_are_refused(families):
    fam = families["bert"]
    engine = MergeEngine.from_dirs(fam.base, fam.models, granularity="layer")
    with pytest.raises(ConfigError, match=r"shape \(2, 5\), expected \(3, 5\)"):
        engine.apply(np.zeros((2, 5)))
    names = dict.fromkeys(engine.param_names, 0.1)
    del names["w.ft1.head"]
    with pytest.raises(ConfigError, match=r"miss \['w.ft1.head'\]"):
        engine.apply(names)
    with pytest.raises(ConfigError, match="unknown names"):
        engine.apply(dict.fromkeys(engine.param_names, 0.1) | {"w.ft9.head": 1.0})
    bad = engine.uniform()
    bad[0, 0] = np.nan
    with pytest.raises(ConfigError, match="finite.*w.ft0.embeddings"):
        engine.apply(bad)
    with pytest.raises(ConfigError, match=r"granularity='block' is not one of \['model'"):
        MergeEngine.from_dirs(fam.base, fam.models, granularity="block")
    with pytest.raises(ConfigError, match=r"heads='some' is not one of \['merge'"):
        MergeEngine.from_dirs(fam.base, fam.models, heads="some")
    with pytest.raises(ConfigError, match="model 'nope' is not one of"):
        engine.one_hot("nope")


def test_bfloat16_engine(families):
    fam = families["bert"]
    engine = MergeEngine.from_dirs(fam.base, fam.models, granularity="tensor", dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in engine.model.parameters())
    for i, path in enumerate(fam.models):
        engine.apply(engine.one_hot(i))
        ref_model = fam.cls.from_pretrained(str(path), dtype=torch.bfloat16).eval()
        ref = ref_model.state_dict()
        for slot in engine.slots():
            assert torch.equal(slot.out, ref[slot.name]), slot.name
        assert torch.equal(_outputs(engine.model, fam.inputs), _outputs(ref_model, fam.inputs))
    c = np.random.default_rng(1).uniform(size=(engine.n_models, engine.n_groups))
    engine.apply(c)
    refs = [load_reference(p, fam.cls).to(torch.bfloat16).state_dict() for p in fam.models]
    base = load_reference(fam.base, fam.cls).to(torch.bfloat16).state_dict()
    for slot in engine.slots():
        b = base[slot.name].float()
        expected = b + sum(
            c[i, slot.group] * (r[slot.name].float() - b) for i, r in enumerate(refs)
        )
        # summed in float32 and rounded once: within half a bfloat16 ulp (2^-9 relative)
        torch.testing.assert_close(slot.out.float(), expected, rtol=2**-8, atol=1e-6)
    assert not torch.isnan(_outputs(engine.model, fam.inputs)).any()


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_float32_rows_into_a_bfloat16_model_round_once(families, granularity):
    """The evaluation precision of a study: rows kept in float32, one rounding per weight."""
    fam = families["bert"]
    engine = MergeEngine.from_dirs(
        fam.base, fam.models, granularity=granularity, model_dtype=torch.bfloat16
    )
    assert engine.stacked.dtype == torch.float32 and engine._kernel.mode == "mv-round"
    assert all(p.dtype == torch.bfloat16 for p in engine.model.parameters())
    c = np.random.default_rng(2).uniform(-0.5, 1.5, size=(engine.n_models, engine.n_groups))
    engine.apply(c)
    base = _state(fam.base, fam.cls)
    models = [_state(p, fam.cls) for p in fam.models]
    for slot in engine.slots():
        exact = base[slot.name].double() + sum(
            c[i, slot.group] * (m[slot.name].double() - base[slot.name].double())
            for i, m in enumerate(models)
        )
        # summed in float32, rounded once: within a bfloat16 rounding of the exact sum
        torch.testing.assert_close(slot.out.double(), exact, rtol=2**-8, atol=1e-6)
    engine.apply(engine.one_hot(1))  # a one-hot merge is the model rounded once
    for slot in engine.slots():
        assert torch.equal(slot.out, models[1][slot.name].to(torch.bfloat16)), slot.name


def test_model_precision_switch_re_applies_the_merge_and_head(bert_mixed_heads):
    fam = bert_mixed_heads
    engine = MergeEngine.from_dirs(
        fam.base, fam.models, granularity="layer", heads="separate", model_dtype=torch.bfloat16
    )
    c = np.random.default_rng(4).uniform(size=(engine.n_models, engine.n_groups))
    engine.apply(c)
    engine.use_head(2)
    with engine.model_precision(torch.float32):
        assert all(p.dtype == torch.float32 for p in engine.model.parameters())
        fp32 = MergeEngine.from_dirs(fam.base, fam.models, granularity="layer", heads="separate")
        fp32.apply(c)
        fp32.use_head(2)
        ours, ref = engine.model.state_dict(), fp32.model.state_dict()
        for name, tensor in ref.items():
            assert torch.equal(ours[name], tensor), name  # exact: not converted from bf16
        assert torch.equal(_outputs(engine.model, fam.inputs), _outputs(fp32.model, fam.inputs))
    assert all(p.dtype == torch.bfloat16 for p in engine.model.parameters())
    assert engine.active_head == engine.model_names[2]
    engine.use_head(0)  # heads still switch (another label count) after the round trip
    assert engine.model.classifier.weight.shape[0] == 2
    assert engine.model.classifier.weight.dtype == torch.bfloat16


def test_kernel_modes_round_once():
    from evolver_opt.merge.kernels import GroupMatVec

    gen = torch.Generator().manual_seed(0)
    stacked64 = torch.randn(4, 1000, generator=gen, dtype=torch.float64)
    spans = [(0, 10), (10, 10), (10, 777), (777, 1000)]
    coef = np.random.default_rng(0).normal(size=(4, 4))
    coef[3] = [0.0, 1.0, 0.0, 0.0]  # one-hot group
    coef[0] = 0.0  # all-zero group
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        rows = stacked64.to(dtype)  # the stored weights; the sum below is exact in float64
        exact = torch.cat(
            [rows[:, s:e].double().t() @ torch.tensor(coef[g]) for g, (s, e) in enumerate(spans)]
        )
        outs = []
        for chunk, workers in ((7, 3), (None, 1)):  # chunks and workers do not change it
            out = torch.empty(1000, dtype=dtype)
            kernel = GroupMatVec(rows, out, spans, chunk=chunk, workers=workers)
            assert kernel.mode == ("mv" if dtype == torch.float32 else "chunked")
            kernel(coef)
            outs.append(out)
        assert torch.equal(outs[0], outs[1])
        # float32 accumulation, one rounding to the dtype: within one ulp of the exact sum
        ulp = {torch.float32: 2**-20, torch.bfloat16: 2**-7, torch.float16: 2**-10}[dtype]
        torch.testing.assert_close(outs[0].double(), exact, rtol=ulp, atol=1e-6)
        assert torch.equal(outs[0][777:], rows[1, 777:]) and (outs[0][:10] == 0).all()


def test_model_names(families):
    fam = families["llama"]
    engine = MergeEngine.from_dirs(fam.base, fam.models, model_names=["a", "b-2", "c_3"])
    assert engine.param_names == ["w.a.all", "w.b-2.all", "w.c_3.all"]
    with pytest.raises(ConfigError, match="model name 'x.y'"):
        load_checkpoints(fam.base, fam.models, model_names=["x.y", "b", "c"])
    with pytest.raises(ConfigError, match="unique"):
        load_checkpoints(fam.base, fam.models, model_names=["a", "a", "c"])
    with pytest.raises(ConfigError, match="2 names, expected 3"):
        load_checkpoints(fam.base, fam.models, model_names=["a", "b"])


def test_apply_allocates_nothing_of_model_size(families):
    from torch.profiler import ProfilerActivity, profile

    fam = families["bert"]
    for dtype in (torch.float32, torch.bfloat16):
        engine = MergeEngine.from_dirs(fam.base, fam.models, granularity="tensor", dtype=dtype)
        c = engine.uniform()
        threads = torch.get_num_threads()
        engine.apply(c)
        assert torch.get_num_threads() == threads
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            engine.apply(c)
        allocated = sum(max(e.self_cpu_memory_usage, 0) for e in prof.events())
        model_bytes = engine.output.numel() * engine.output.element_size()
        assert allocated < 0.05 * model_bytes, (dtype, allocated, model_bytes)


def test_auto_class_choice(families):
    fam = families["bert"]
    engine = MergeEngine.from_dirs(
        fam.base, fam.models, auto_class="AutoModelForSequenceClassification"
    )
    assert type(engine.model).__name__ == "BertForSequenceClassification"
    with pytest.raises(ConfigError, match="auto_class='AutoModelForNothing' is not a transformers"):
        MergeEngine.from_dirs(fam.base, fam.models, auto_class="AutoModelForNothing")
