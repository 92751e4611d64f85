"""The task-arithmetic family (sparsification x consensus): its members meet where they should.

task_arithmetic (none, none), ties (magnitude, sign), dare (random, none) and dare_ties
(random, sign) are one computation; switching a step off must give the member without it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evolver_opt.errors import ConfigError
from evolver_opt.export.mergekit import mergekit_config
from evolver_opt.merge import MergeEngine, get_method
from evolver_opt.merge.methods import form_methods, list_methods, method_class

from .conftest import _config


def _merged(engine, name, **kwargs):
    get_method(name).merge(engine, **kwargs)
    return engine.output.clone()


@pytest.fixture(scope="module")
def agreeing(tmp_path_factory):
    """A base and 3 variants whose task vectors share one sign pattern, no entry zero: TIES's
    election never discards anything."""
    root = tmp_path_factory.mktemp("agreeing")
    cls, cfg = _config("bert")
    torch.manual_seed(0)
    base = cls(cfg).eval()
    base.save_pretrained(root / "base")
    gen = torch.Generator().manual_seed(3)
    signs = {
        n: torch.randint(0, 2, p.shape, generator=gen) * 2 - 1 for n, p in base.named_parameters()
    }
    dirs = []
    for i in range(3):
        model = cls(cfg).eval()
        model.load_state_dict(base.state_dict())
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.add_(signs[name] * (0.01 + 0.05 * torch.rand(p.shape, generator=gen)))
        dirs.append(root / f"ft{i}")
        model.save_pretrained(dirs[-1])
    return MergeEngine.from_dirs(root / "base", dirs, granularity="layer")


def test_the_members_are_the_family_s_four_corners_with_their_capabilities():
    corners = {n: (method_class(n).sparsification, method_class(n).consensus) for n in
               ("task_arithmetic", "ties", "dare", "dare_ties")}  # fmt: skip
    assert corners == {
        "task_arithmetic": (None, None),
        "ties": ("magnitude", "sign"),
        "dare": ("random", None),
        "dare_ties": ("random", "sign"),
    }
    dare_ties, dare = method_class("dare_ties"), method_class("dare")
    assert "dare_ties" in list_methods() and "dare_ties" in form_methods()
    assert dare_ties.params == dare.params and dare_ties.grid == dare.grid
    assert not (dare_ties.linear or dare_ties.separable or dare_ties.reference)
    assert dare_ties.merger and dare_ties.data is None
    assert "task_arithmetic" not in form_methods()  # the plain sum stays a coefficient form


def test_mergekit_refuses_dare_ties_for_its_own_masks(families):
    fam = families["bert"]
    engine = MergeEngine.from_dirs(fam.base, fam.models)
    with pytest.raises(ConfigError, match="DARE-TIES drops task-vector entries at random"):
        mergekit_config(engine, "dare_ties", {})


def test_ties_without_trim_or_sign_conflict_is_task_arithmetic_over_n(agreeing):
    """With every task vector agreeing, the disjoint mean is the plain mean: TIES at density 1
    is task arithmetic at lambda / n."""
    weights = [0.5, 1.0, 2.0]
    ties = _merged(agreeing, "ties", density=1.0, lambda_=0.9, weights=weights)
    ta = _merged(agreeing, "task_arithmetic", lambda_=0.3, weights=weights)
    torch.testing.assert_close(ties, ta, rtol=1e-5, atol=1e-6)


def test_dare_without_drops_is_task_arithmetic(families):
    fam = families["llama"]
    engine = MergeEngine.from_dirs(fam.base, fam.models, granularity="tensor")
    kwargs = {"lambda_": 0.7, "weights": [0.2, -0.3, 1.5]}
    dare = _merged(engine, "dare", density=1.0, seed=5, **kwargs)
    torch.testing.assert_close(dare, _merged(engine, "task_arithmetic", **kwargs))


def test_dare_ties_without_drops_is_ties_without_trim(families):
    fam = families["bert"]
    engine = MergeEngine.from_dirs(fam.base, fam.models)
    kwargs = {"density": 1.0, "lambda_": 0.8, "weights": [0.5, -1.0, 2.0]}
    ties = _merged(engine, "ties", **kwargs)
    assert torch.equal(_merged(engine, "dare_ties", seed=9, **kwargs), ties)


def test_dare_ties_elects_signs_among_dares_masked_task_vectors(families):
    """dare_ties' parts are dare's parts (same seed, same masks) kept where their sign is the
    sign of their sum, each over the number of models kept there; they sum to its merge."""
    fam = families["bert"]
    engine = MergeEngine.from_dirs(fam.base, fam.models, granularity="layer")
    kwargs = {"density": 0.4, "weights": [1.0, 2.0, 0.5], "seed": 3}
    dare_parts = [p for _, p in get_method("dare").task_parts(engine, **kwargs)]
    parts = [p for _, p in get_method("dare_ties").task_parts(engine, **kwargs)]
    conflicts = 0
    for d, p in zip(dare_parts, parts, strict=True):
        kept = (torch.sign(d) == torch.sign(d.sum(dim=0))) & (d != 0)
        torch.testing.assert_close(p, d * kept / kept.sum(dim=0).clamp(min=1))
        conflicts += int(((d != 0).sum(dim=0) > kept.sum(dim=0)).sum())
    assert conflicts > 0  # the tiny experts disagree: the election discards something
    merged = _merged(engine, "dare_ties", lambda_=1.3, **kwargs)
    for slot, p in zip(engine.slots(), parts, strict=True):
        expected = slot.base.float() + 1.3 * p.sum(dim=0)
        start, end = engine.layout.span(slot.name)
        torch.testing.assert_close(merged[start:end], expected.reshape(-1))
    assert not torch.allclose(merged, _merged(engine, "dare", lambda_=1.3, **kwargs))
    engine.add_form("dare_ties", get_method("dare_ties").task_parts(engine, **kwargs))
    engine.apply(np.full(engine.genome.shape, 1.3), form="dare_ties")
    torch.testing.assert_close(engine.output, merged, rtol=1e-5, atol=1e-6)


def test_dare_draws_one_mask_per_model_and_dare_ties_shares_them(families):
    fam = families["bert"]
    engine = MergeEngine.from_dirs(fam.base, fam.models, granularity="tensor")
    kwargs = {"density": 0.5, "seed": 2}
    dare = [p != 0 for _, p in get_method("dare").task_parts(engine, **kwargs)]
    big = [m for m in dare if m[0].numel() >= 64]
    assert big and all(not torch.equal(m[0], m[1]) for m in big)  # not one mask for all models
    dare_ties = [p != 0 for _, p in get_method("dare_ties").task_parts(engine, **kwargs)]
    assert all(not (t & ~d).any() for t, d in zip(dare_ties, dare, strict=True))
