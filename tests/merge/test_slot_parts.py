"""Separable methods: ``constant + sum_i L_i(theta_i)`` is the method's own merge."""

from __future__ import annotations

import pytest
import torch

from evolver_opt.errors import ConfigError
from evolver_opt.merge import MergeEngine, get_method, list_methods
from evolver_opt.merge.methods.fisher import expert_fisher
from evolver_opt.merge.methods.regmean import expert_grams

from .test_methods import _examples

SEPARABLE = list_methods(lambda cls: cls.separable)


def test_the_separable_capability_is_declared_by_the_linear_and_statistics_methods():
    assert SEPARABLE == ["average", "fisher", "regmean", "task_arithmetic"]
    with pytest.raises(ConfigError, match="not separable"):
        get_method("ties").slot_parts(None)


def _arguments(name, fam, engine):
    examples = _examples(fam, engine)
    if name == "regmean":
        grams = [expert_grams(engine, i, examples[n]) for i, n in enumerate(engine.model_names)]
        return {"grams": grams, "alpha": 0.8, "weights": [1, 2, 1]}
    if name == "fisher":
        fishers = [expert_fisher(engine, i, examples[n]) for i, n in enumerate(engine.model_names)]
        return {"fishers": fishers, "weights": [1, 2, 1]}
    if name == "task_arithmetic":
        return {"weights": [0.5, 1.0, 0.25], "lambda": 0.7}
    return {"weights": [1, 2, 1]}


@pytest.mark.parametrize("name", SEPARABLE)
@pytest.mark.parametrize("family_name", ["bert", "llama"])
def test_slot_parts_sum_to_the_merge_and_are_linear(name, family_name, families):
    fam = families[family_name]
    engine = MergeEngine.from_dirs(fam.base, fam.models)
    method = get_method(name)
    kwargs = _arguments(name, fam, engine)
    method.merge(engine, **kwargs)
    merged = engine.output.clone()
    parts = method.slot_parts(engine, **method.check_params(kwargs))
    gen = torch.Generator().manual_seed(0)
    for tensor in engine.slots():
        constant = parts.constant(tensor)
        total = torch.zeros(tensor.shape, dtype=torch.float64) if constant is None else constant
        for i, model in enumerate(tensor.models):
            total = total + parts.part(i, tensor, model)
        start, end = engine.layout.span(tensor.name)
        torch.testing.assert_close(
            total.float().reshape(-1), merged[start:end], rtol=1e-5, atol=1e-6
        )
        # linear in the model's weights: the incremental path adds L_i(new - old)
        a, b = (torch.randn(tensor.shape, generator=gen, dtype=torch.float64) for _ in "ab")
        torch.testing.assert_close(
            parts.part(1, tensor, a) - parts.part(1, tensor, b),
            parts.part(1, tensor, a - b),
            rtol=1e-9,
            atol=1e-9,
        )
