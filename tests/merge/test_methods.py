"""Static merge methods against direct per-tensor computations on reference models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from evolver_opt.errors import ConfigError
from evolver_opt.merge import MergeEngine, get_method, list_methods
from evolver_opt.merge.methods._base import keep_count
from evolver_opt.merge.methods.ties import trim_magnitude

from .conftest import load_reference


def _states(fam):
    base = load_reference(fam.base, fam.cls).state_dict()
    return base, [load_reference(p, fam.cls).state_dict() for p in fam.models]


def _examples(fam, engine, rows=4, batches=2):
    out = {}
    for i, name in enumerate(engine.model_names):
        gen = torch.Generator().manual_seed(50 + i)
        items = []
        for _ in range(batches):
            ids = torch.randint(3, 61, (rows, 9), generator=gen)
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            if "decoder_input_ids" in fam.inputs:
                batch["decoder_input_ids"] = ids[:, :4]
            items.append(batch)
        out[name] = items
    return out


def test_registry_lists_methods_and_refuses_unknown_names():
    shipped = {
        "average", "dare", "dare_ties", "fisher", "iso_c", "iso_cts", "regmean", "regmean_pp",
        "task_arithmetic", "ties", "tsv_m", "wudi",
    }  # fmt: skip
    assert shipped <= set(list_methods())  # a new method needs no edit here: its file registers it
    assert list_methods() == sorted(set(list_methods()))
    with pytest.raises(
        ConfigError, match=r"unknown merge method 'slerp'; valid methods: \['average'"
    ):
        get_method("slerp")
    for name in list_methods():
        method = get_method(name)
        assert method.name == name and method.url.startswith("https://arxiv.org/")


def test_average_and_task_arithmetic_formulas(family):
    engine = MergeEngine.from_dirs(family.base, family.models, granularity="layer")
    base, models = _states(family)
    avg = get_method("average")
    c = avg.coefficients(engine, weights=[1, 1, 2])
    assert c.shape == (3, engine.n_groups) and np.allclose(c[:, 0], [0.25, 0.25, 0.5])
    result = avg.merge(engine, weights=[1, 1, 2])
    assert result.coefficients is not None
    for slot in engine.slots():
        expected = 0.25 * models[0][slot.name] + 0.25 * models[1][slot.name]
        expected += 0.5 * models[2][slot.name]
        torch.testing.assert_close(slot.out, expected, rtol=1e-5, atol=1e-6)
    ta = get_method("task_arithmetic")
    assert np.allclose(ta.coefficients(engine, lambda_=0.5)[:, 0], [0.5, 0.5, 0.5])
    ta.merge(engine, weights=[0.2, 0.3, 0.5], **{"lambda": 0.7})
    for slot in engine.slots():
        b = base[slot.name]
        expected = b + 0.7 * sum(w * (m[slot.name] - b) for w, m in zip([0.2, 0.3, 0.5], models))
        torch.testing.assert_close(slot.out, expected, rtol=1e-5, atol=1e-6)


def test_parameter_errors(families):
    fam = families["llama"]
    engine = MergeEngine.from_dirs(fam.base, fam.models)
    with pytest.raises(ConfigError, match=r"weights has 2 values \[1.0, 2.0\], expected 3"):
        get_method("average").merge(engine, weights=[1, 2])
    with pytest.raises(
        ConfigError, match=r"has no parameter \['density'\]; it takes \['weights'\]"
    ):
        get_method("average").merge(engine, density=0.3)
    with pytest.raises(ConfigError, match=r"density=1.5 must be in \(0, 1\]"):
        get_method("ties").merge(engine, density=1.5)
    with pytest.raises(ConfigError, match="'ties' is not linear"):
        get_method("ties").coefficients(engine)
    with pytest.raises(ConfigError, match="needs examples"):
        get_method("fisher").merge(engine)
    with pytest.raises(ConfigError, match=r"examples miss models \['ft2'\]"):
        get_method("regmean").merge(engine, examples={"ft0": [fam.inputs], "ft1": [fam.inputs]})


def test_trim_keeps_exact_counts():
    tau = torch.randn(37, 29, generator=torch.Generator().manual_seed(0))
    for density in (0.01, 0.2, 0.5, 0.99, 1.0):
        trimmed = trim_magnitude(tau, density)
        k = keep_count(tau.numel(), density)
        assert int((trimmed != 0).sum()) == k == max(1, round(density * tau.numel()))
        kept = trimmed[trimmed != 0].abs()
        assert kept.min() >= tau.abs().flatten().sort(descending=True).values[k - 1]


def _direct_ties(base, models, name, density, lam):
    b = base[name]
    taus = torch.stack([m[name] - b for m in models]).reshape(len(models), -1)
    k = keep_count(taus.shape[1], density)
    trimmed = torch.zeros_like(taus)
    for i, t in enumerate(taus):
        order = torch.argsort(t.abs(), descending=True)[:k]
        trimmed[i, order] = t[order]
    sign = torch.sign(trimmed.sum(0))
    agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
    mean = (trimmed * agree).sum(0) / agree.sum(0).clamp(min=1)
    return b + lam * mean.view_as(b)


def test_ties_matches_direct_computation(family):
    engine = MergeEngine.from_dirs(family.base, family.models, granularity="tensor")
    base, models = _states(family)
    get_method("ties").merge(engine, density=0.3, lambda_=0.8)
    for slot in engine.slots():
        expected = _direct_ties(base, models, slot.name, 0.3, 0.8)
        torch.testing.assert_close(slot.out, expected, rtol=1e-5, atol=1e-6)
        assert not torch.isnan(slot.out).any()


@pytest.mark.parametrize("method", ["ties", "dare"])
def test_single_model_sparsity_is_exact(families, method):
    fam = families["bert"]
    engine = MergeEngine.from_dirs(fam.base, fam.models[:1])
    get_method(method).merge(engine, density=0.25)
    base, models = _states(fam)
    for slot in engine.slots():
        tau = models[0][slot.name] - base[slot.name]
        delta = slot.out - base[slot.name]
        nonzero = delta != 0
        assert int(nonzero.sum()) == keep_count(tau.numel(), 0.25), slot.name
        scale = 4.0 if method == "dare" else 1.0  # DARE rescales kept entries by 1 / density
        torch.testing.assert_close(delta[nonzero], scale * tau[nonzero], rtol=1e-4, atol=1e-6)


def test_dare_is_seeded(families):
    fam = families["t5"]
    engine = MergeEngine.from_dirs(fam.base, fam.models)
    get_method("dare").merge(engine, density=0.5, seed=3)
    first = engine.output.clone()
    engine.apply(engine.uniform())
    get_method("dare").merge(engine, density=0.5, seed=3)
    assert torch.equal(engine.output, first)
    get_method("dare").merge(engine, density=0.5, seed=4)
    assert not torch.equal(engine.output, first)
    assert not torch.isnan(engine.output).any()


def test_fisher_matches_direct_computation(families):
    fam = families["bert"]
    engine = MergeEngine.from_dirs(fam.base, fam.models)
    examples = _examples(fam, engine)
    get_method("fisher").merge(engine, examples=examples, weights=[1, 2, 1])
    w = [0.25, 0.5, 0.25]
    num, den = {}, {}
    for i, path in enumerate(fam.models):
        ref = load_reference(path, fam.cls)
        params = dict(ref.named_parameters())
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        count = 0
        for batch in examples[engine.model_names[i]]:
            for r in range(batch["input_ids"].shape[0]):
                ref.zero_grad()
                logits = ref(**{k: v[r : r + 1] for k, v in batch.items()}).logits
                torch.log_softmax(logits, -1).max(-1).values.sum().backward()
                for n, p in params.items():
                    fisher[n] += p.grad**2
                count += 1
        for n, p in params.items():
            f = w[i] * fisher[n] / count
            num[n] = num.get(n, 0) + f * p.detach()
            den[n] = den.get(n, 0) + f
    _, models = _states(fam)
    for slot in engine.slots():
        avg = sum(wi * m[slot.name] for wi, m in zip(w, models))
        expected = torch.where(den[slot.name] > 1e-12, num[slot.name] / den[slot.name], avg)
        torch.testing.assert_close(slot.out, expected, rtol=1e-4, atol=1e-6)


def test_fisher_on_decoders_is_a_convex_combination(families):
    for name in ("llama", "t5"):
        fam = families[name]
        engine = MergeEngine.from_dirs(fam.base, fam.models)
        get_method("fisher").merge(engine, examples=_examples(fam, engine, rows=2, batches=1))
        rows = engine.stacked[1:]
        assert not torch.isnan(engine.output).any()
        assert (engine.output >= rows.min(0).values - 1e-6).all()
        assert (engine.output <= rows.max(0).values + 1e-6).all()


def _linear_names(model):
    return {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def test_regmean_matches_direct_computation(families):
    fam = families["bert"]
    engine = MergeEngine.from_dirs(fam.base, fam.models)
    examples = _examples(fam, engine)
    get_method("regmean").merge(engine, examples=examples, alpha=0.8)
    _, models = _states(fam)
    sum_g, sum_gw = {}, {}
    for i, path in enumerate(fam.models):
        ref = load_reference(path, fam.cls)
        grams = {}
        hooks = []
        for n, m in ref.named_modules():
            if isinstance(m, nn.Linear):

                def rec(mod, inp, n=n, grams=grams):
                    x = inp[0].reshape(-1, inp[0].shape[-1]).double()
                    grams[n] = grams.get(n, 0) + x.t() @ x

                hooks.append(m.register_forward_pre_hook(rec))
        with torch.no_grad():
            for batch in examples[engine.model_names[i]]:
                ref(**batch)
        for n, g in grams.items():
            g = 0.8 * g + 0.2 * torch.diag(torch.diagonal(g))
            w_t = ref.get_submodule(n).weight.double().t()
            sum_g[n] = sum_g.get(n, 0) + g / 3
            sum_gw[n] = sum_gw.get(n, 0) + g @ w_t / 3
    linear = _linear_names(engine.model)
    assert len(linear) == 14
    for slot in engine.slots():
        if slot.name in linear:
            layer = slot.name.removesuffix(".weight")
            expected = torch.linalg.solve(sum_g[layer], sum_gw[layer]).t().float()
            torch.testing.assert_close(slot.out, expected, rtol=1e-3, atol=1e-5)
        else:
            avg = sum(m[slot.name] for m in models) / 3
            torch.testing.assert_close(slot.out, avg, rtol=1e-5, atol=1e-6)


def test_regmean_runs_on_decoders(families):
    for name in ("llama", "t5"):
        fam = families[name]
        engine = MergeEngine.from_dirs(fam.base, fam.models, granularity="layer")
        get_method("regmean").merge(engine, examples=_examples(fam, engine, rows=8, batches=1))
        assert torch.isfinite(engine.output).all()
        with torch.no_grad():
            assert torch.isfinite(engine.model(**fam.inputs).logits).all()


def test_data_methods_with_separate_heads(bert_mixed_heads):
    fam = bert_mixed_heads
    engine = MergeEngine.from_dirs(fam.base, fam.models)
    assert not engine.heads_merged
    examples = _examples(fam, engine, rows=4, batches=1)
    for name in ("fisher", "regmean"):
        get_method(name).merge(engine, examples=examples)
        assert torch.isfinite(engine.output).all()
        for i, path in enumerate(fam.models):  # each task's own head is still attached intact
            engine.use_head(i)
            ref = load_reference(path, fam.cls)
            assert torch.equal(engine.model.classifier.weight, ref.classifier.weight)
