"""The engine on a CUDA device (skipped without one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evolver_opt.merge import MergeEngine, get_method

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_engine_matches_cpu(families, dtype):
    fam = families["llama"]
    cpu = MergeEngine.from_dirs(fam.base, fam.models, granularity="layer", dtype=dtype)
    gpu = MergeEngine.from_dirs(
        fam.base, fam.models, granularity="layer", dtype=dtype, device="cuda"
    )
    assert all(p.device.type == "cuda" for p in gpu.model.parameters())
    for i in range(gpu.n_models):
        gpu.apply(gpu.one_hot(i))
        cpu.apply(cpu.one_hot(i))
        assert torch.equal(gpu.output.cpu(), cpu.output)
    c = np.random.default_rng(0).uniform(size=(gpu.n_models, gpu.n_groups))
    gpu.apply(c)
    cpu.apply(c)
    tol = 1e-5 if dtype == torch.float32 else 2**-7
    torch.testing.assert_close(gpu.output.cpu().float(), cpu.output.float(), rtol=tol, atol=1e-6)
    for name in ("ties", "dare"):
        get_method(name).merge(gpu, density=0.3)
        assert torch.isfinite(gpu.output).all()
