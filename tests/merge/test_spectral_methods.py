"""TSV-M, Iso-C, Iso-CTS, WUDI and RegMean++: properties derived by hand on tiny matrices,
and every method with parts written as the sum of its parts (the study form's contract)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evolver_opt.errors import ConfigError
from evolver_opt.merge import MergeEngine, get_method
from evolver_opt.merge.groups import block_of
from evolver_opt.merge.methods import form_methods, list_methods, method_class
from evolver_opt.merge.methods._base import task_vectors
from evolver_opt.merge.methods.iso_c import isotropic
from evolver_opt.merge.methods.iso_cts import iso_cts_parts, subspace_sizes
from evolver_opt.merge.methods.ties import ties_merge, ties_parts
from evolver_opt.merge.methods.tsv_m import polar_factor, tsv_parts
from evolver_opt.merge.methods.wudi import (
    adam_solution,
    closed_form_parts,
    interference_grams,
    wudi_loss,
)

from .test_methods import _examples


def _orthogonal_low_rank(t: int, m: int, n: int, rank: int, seed: int = 0) -> torch.Tensor:
    """``t`` task matrices of rank ``rank`` on mutually orthogonal left and right subspaces."""
    gen = torch.Generator().manual_seed(seed)
    q_left = torch.linalg.qr(torch.randn(m, t * rank, generator=gen, dtype=torch.float64))[0]
    q_right = torch.linalg.qr(torch.randn(n, t * rank, generator=gen, dtype=torch.float64))[0]
    out = []
    for i in range(t):
        cols = slice(i * rank, (i + 1) * rank)
        s = torch.rand(rank, generator=gen, dtype=torch.float64) + 0.5
        out.append((q_left[:, cols] * s) @ q_right[:, cols].T)
    return torch.stack(out)


def test_tsv_m_of_orthogonal_task_vectors_is_their_sum():
    taus = _orthogonal_low_rank(t=3, m=12, n=9, rank=3)  # rank k = 9 // 3
    parts = tsv_parts(taus)
    torch.testing.assert_close(parts.sum(dim=0), taus.sum(dim=0), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(parts, taus, rtol=1e-9, atol=1e-10)  # each keeps its own


def test_tsv_m_decorrelates_overlapping_task_vectors():
    gen = torch.Generator().manual_seed(1)
    taus = torch.randn(3, 10, 8, generator=gen, dtype=torch.float64)
    parts = tsv_parts(taus)
    k = 8 // 3
    # the parts' left singular bases are mutually orthogonal (the polar factor's columns)
    bases = [torch.linalg.svd(p, full_matrices=False)[0][:, :k] for p in parts]
    for i in range(3):
        for j in range(i + 1, 3):
            assert torch.linalg.norm(bases[i].T @ bases[j]) < 1e-8
    # and each part keeps its task's top-k singular values
    for p, tau in zip(parts, taus):
        s_part = torch.linalg.svdvals(p)[:k]
        torch.testing.assert_close(s_part, torch.linalg.svdvals(tau)[:k])


def test_polar_factor_is_orthogonal_and_nearest():
    a = torch.randn(7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    q = polar_factor(a)
    torch.testing.assert_close(q.T @ q, torch.eye(4, dtype=torch.float64))
    other = torch.linalg.qr(a)[0]
    assert torch.linalg.norm(a - q) <= torch.linalg.norm(a - other) + 1e-12


def test_iso_c_spectrum_is_flat_with_the_sum_singular_vectors():
    gen = torch.Generator().manual_seed(3)
    total = torch.randn(3, 9, 6, generator=gen, dtype=torch.float64).sum(dim=0)
    iso = isotropic(total)
    s = torch.linalg.svdvals(iso)
    torch.testing.assert_close(s, torch.full_like(s, torch.linalg.svdvals(total).mean()))
    u, _, vt = torch.linalg.svd(total, full_matrices=False)
    torch.testing.assert_close(iso, s[0] * u @ vt)


def test_iso_cts_has_a_flat_spectrum_and_is_iso_c_with_only_a_common_subspace():
    gen = torch.Generator().manual_seed(4)
    taus = torch.randn(3, 12, 9, generator=gen, dtype=torch.float64)
    merged = iso_cts_parts(taus, 0.5).sum(dim=0)
    s = torch.linalg.svdvals(merged)
    torch.testing.assert_close(s, torch.full_like(s, s.mean()))
    torch.testing.assert_close(
        iso_cts_parts(taus, 1.0).sum(dim=0), isotropic(taus.sum(dim=0)), rtol=1e-9, atol=1e-10
    )
    assert subspace_sizes(9, 3, 0.5) == (3, 2)  # 4 left for tasks, rounded to 2 each of 3


def test_wudi_closed_form_minimises_the_loss_and_one_task_returns_it():
    gen = torch.Generator().manual_seed(5)
    taus = torch.randn(4, 6, 10, generator=gen, dtype=torch.float64)
    tau = closed_form_parts(taus).sum(dim=0)
    grams = interference_grams(taus)
    gradient = tau @ grams.sum(dim=0) - (taus @ grams).sum(dim=0)
    assert torch.linalg.norm(gradient) < 1e-8 * torch.linalg.norm(tau)
    assert wudi_loss(tau, taus) < wudi_loss(taus.sum(dim=0), taus)
    for nudge in (1e-3, -1e-3):  # a stationary point of a convex quadratic: the minimum
        assert wudi_loss(tau + nudge * taus[0], taus) > wudi_loss(tau, taus)
    one = taus[:1]
    torch.testing.assert_close(closed_form_parts(one)[0], one[0], rtol=1e-8, atol=1e-10)


def test_wudi_adam_lowers_the_loss_from_the_sum():
    gen = torch.Generator().manual_seed(6)
    taus = torch.randn(3, 5, 8, generator=gen) * 1e-2
    start = wudi_loss(taus.sum(dim=0), taus)
    after = adam_solution(taus, steps=200, lr=1e-3)
    assert wudi_loss(after, taus) < 0.5 * start
    torch.testing.assert_close(adam_solution(taus, steps=0, lr=1e-3), taus.sum(dim=0))


def test_ties_parts_sum_to_the_ties_merge():
    gen = torch.Generator().manual_seed(7)
    taus = torch.randn(3, 5, 4, generator=gen)
    torch.testing.assert_close(ties_parts(taus, 0.4).sum(dim=0), ties_merge(taus, 0.4))


def _data_kwargs(fam, engine, name):
    if method_class(name).data is None:
        return {}
    return {"examples": _examples(fam, engine)}


@pytest.mark.parametrize("name", ["tsv_m", "iso_c", "iso_cts", "wudi", "ties", "dare", "regmean"])
def test_a_form_at_scale_lambda_is_the_method_merge(families, name):
    fam = families["bert"]
    engine = MergeEngine.from_dirs(fam.base, fam.models, granularity="layer")
    kwargs = _data_kwargs(fam, engine, name)
    method = get_method(name)
    engine.add_form(name, method.task_parts(engine, **kwargs))
    engine.apply(np.full(engine.genome.shape, 1.2), form=name)
    via_form = engine.output.clone()
    scale = {"lambda": 1.2} if "lambda_" in method.params else {}
    if not scale:  # regmean: no scale; compare at 1
        engine.apply(np.ones(engine.genome.shape), form=name)
        via_form = engine.output.clone()
    method.merge(engine, **kwargs, **scale)
    torch.testing.assert_close(via_form, engine.output, rtol=1e-4, atol=1e-5)
    engine.apply(engine.one_hot(0))  # the experts' rows are untouched by the form
    torch.testing.assert_close(engine.output, engine.stacked[1])


def test_regmean_pp_equals_regmean_on_a_block_whose_inputs_are_unchanged(tmp_path):
    from .conftest import _config, perturb

    cls, cfg = _config("bert")
    torch.manual_seed(0)
    base = cls(cfg).eval()
    base.save_pretrained(tmp_path / "base")
    dirs = []
    for i in range(3):  # fine-tuned below the first block only... nothing: embeddings frozen
        model = cls(cfg).eval()
        model.load_state_dict(base.state_dict())
        perturb(model, seed=10 + i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "embeddings" in name:
                    p.copy_(base.get_parameter(name))
        dirs.append(tmp_path / f"ft{i}")
        model.save_pretrained(dirs[-1])
    fam = type("F", (), {"inputs": {"input_ids": None}})()
    engine = MergeEngine.from_dirs(tmp_path / "base", dirs, granularity="layer")
    examples = _examples(fam, engine)
    get_method("regmean").merge(engine, examples=examples)
    regmean = engine.output.clone()
    get_method("regmean_pp").merge(engine, examples=examples)
    first = "bert.encoder.layer.0"
    for slot in engine.slots():
        start, end = engine.layout.span(slot.name)
        if block_of(slot.name) == first and slot.name.endswith("weight") and slot.out.dim() == 2:
            torch.testing.assert_close(engine.output[start:end], regmean[start:end])
    later = [s for s in engine.slots() if block_of(s.name) == "bert.encoder.layer.1"]
    start, end = engine.layout.span(later[0].name)  # the second block sees merged inputs
    assert not torch.allclose(engine.output[start:end], regmean[start:end])


def test_regmean_pp_needs_examples_and_a_valid_alpha(families):
    fam = families["bert"]
    engine = MergeEngine.from_dirs(fam.base, fam.models)
    with pytest.raises(ConfigError, match="needs examples"):
        get_method("regmean_pp").merge(engine)
    with pytest.raises(ConfigError, match="alpha=2"):
        get_method("regmean_pp").merge(engine, examples=_examples(fam, engine), alpha=2)


def test_capabilities_are_read_from_the_registry():
    assert set(form_methods()) >= {"tsv_m", "iso_c", "iso_cts", "wudi", "regmean_pp"}
    assert list_methods(lambda c: c.reference) == ["average", "dare", "task_arithmetic", "ties"]
    assert list_methods(lambda c: c.data == "statistics") == ["fisher", "regmean"]
    for name in ("tsv_m", "iso_c", "iso_cts", "wudi"):
        assert method_class(name).grid and method_class(name).data is None


def test_regmean_pp_fits_each_block_to_the_inputs_the_merged_blocks_below_give(families):
    from evolver_opt.merge.methods.regmean import gram_matrices, linear_layers, regression_parts

    fam = families["bert"]
    engine = MergeEngine.from_dirs(fam.base, fam.models, granularity="layer")
    examples = _examples(fam, engine)
    engine.add_form("pp", get_method("regmean_pp").task_parts(engine, examples=examples))
    engine.apply(np.ones(engine.genome.shape), form="pp")  # the parts alone, as a study has them
    merged = engine.output.clone()
    name = "bert.encoder.layer.1.attention.self.query.weight"
    layers = {name: linear_layers(engine)[name]}
    start = engine.layout.span(name)[0]
    grams = []
    for i, batches in enumerate(examples.values()):  # by hand: merged below, model i above
        engine.output.copy_(torch.cat([merged[:start], engine.stacked[i + 1, start:]]))
        grams.append(gram_matrices(engine, layers, batches)[name])
    slot = next(s for s in engine.slots() if s.name == name)
    expected = slot.base.float() + regression_parts(task_vectors(slot), grams, 0.9, False).sum(0)
    s, e = engine.layout.span(name)
    torch.testing.assert_close(merged[s:e].view(slot.shape), expected, rtol=1e-5, atol=1e-6)
