"""The weight-space crossover: deterministic per mask seed, CR-sized masks, in place or not."""

from __future__ import annotations

import torch

from evolver_opt.merge.weight_population import MASK_CHUNK, crossover_into


def test_crossover_is_a_pure_function_of_the_mask_seed_and_takes_about_cr():
    n = MASK_CHUNK + 12345  # more than one mask chunk
    parent = torch.randn(n, generator=torch.Generator().manual_seed(0))
    reference = torch.randn(n, generator=torch.Generator().manual_seed(1))
    a, b, c = torch.empty(n), torch.empty(n), torch.empty(n)
    taken = crossover_into(a, parent, reference, F=0.3, CR=0.25, mask_seed=42)
    crossover_into(b, parent, reference, F=0.3, CR=0.25, mask_seed=42)
    crossover_into(c, parent, reference, F=0.3, CR=0.25, mask_seed=43)
    assert torch.equal(a, b) and not torch.equal(a, c)
    mutant = torch.lerp(parent, reference, 0.3)
    from_mutant = a == mutant
    assert torch.equal(a[~from_mutant], parent[~from_mutant])  # the rest is the parent's
    assert int(from_mutant.sum()) == taken
    assert abs(taken / n - 0.25) < 0.01
    in_place = parent.clone()  # replay writes the offspring over its parent's row
    crossover_into(in_place, in_place, reference, F=0.3, CR=0.25, mask_seed=42)
    assert torch.equal(in_place, a)


def test_crossover_takes_at_least_one_scalar_from_the_mutant():
    parent, reference = torch.zeros(8), torch.ones(8)
    out = torch.empty(8)
    assert crossover_into(out, parent, reference, F=0.5, CR=0.0, mask_seed=3) == 1
    assert int((out == 0.5).sum()) == 1 and out[3 % 8] == 0.5
