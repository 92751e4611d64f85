"""The fused Triton merge against the torch path (the reference).

On CPU tensors the kernel runs under Triton's interpreter (``TRITON_INTERPRET=1``, set per
test), so CI checks its logic; the tests marked ``gpu`` run the compiled kernel on CUDA.
Without triton installed these tests skip, except under ``CI=true`` (the dev extra has it).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from evolver_opt.errors import ConfigError
from evolver_opt.merge import MergeEngine
from evolver_opt.merge.groups import GRANULARITIES
from evolver_opt.merge.kernels import GroupMatVec
from evolver_opt.merge.triton_merge import ENV, block_table

SMALL_BLOCK = 64  # many full, head and tail blocks even in the tiny models
DTYPES = {  # rows dtype > working-model dtype
    "float32": (torch.float32, torch.float32),
    "bfloat16": (torch.bfloat16, torch.bfloat16),
    "float32>bfloat16": (torch.float32, torch.bfloat16),
}
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _need_triton() -> None:
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"triton is not installed ({exc}); CI installs it (dev extra)")
        pytest.skip(f"triton is not installed ({exc})")


@pytest.fixture
def interpret(monkeypatch):
    """Triton's interpreter on for this test (the kernel decorated under it runs CPU tensors)."""
    _need_triton()
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture
def compiled(monkeypatch):
    """The compiled kernel on a CUDA device."""
    _need_triton()
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv(ENV, raising=False)


_ENGINES: dict = {}


def _engine(fam, granularity: str, rows: torch.dtype, device: str = "cpu") -> MergeEngine:
    """One torch-path engine per (family, granularity, rows dtype, device), built once."""
    key = (fam.name, granularity, rows, device)
    if key not in _ENGINES:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(ENV, "0")
            _ENGINES[key] = MergeEngine.from_dirs(
                fam.base, fam.models, granularity=granularity, dtype=rows, device=device
            )
    return _ENGINES[key]


def _rows(c: np.ndarray) -> np.ndarray:
    """``(n_groups, N + 1)`` kernel coefficients of a ``(N, n_groups)`` merge, as ``apply``."""
    rows = np.empty((c.shape[1], c.shape[0] + 1))
    rows[:, 0] = 1.0 - c.sum(axis=0)
    rows[:, 1:] = c.T
    return rows


def _error_bound(stacked, spans, coef, out_dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact merge (float64) and a bound on any float32-accumulated, once-rounded result:
    ``(N + 1) 2^-23 sum_k |a_k x_k|`` plus half an ulp of the output dtype."""
    x = stacked.double()
    exact, scale = torch.zeros(x.shape[1], dtype=torch.float64), torch.zeros(x.shape[1])
    for g, (s, e) in enumerate(spans):
        a = torch.tensor(coef[g], dtype=torch.float64)
        exact[s:e] = a @ x[:, s:e]
        scale[s:e] = (a.abs() @ x[:, s:e].abs()).float()
    half_ulp = {torch.float32: 2**-24, torch.bfloat16: 2**-8}[out_dtype]
    return exact, x.shape[0] * 2**-23 * scale.double() + half_ulp * exact.abs() + 1e-30


def _compare(stacked, spans, out_dtype, *, backend_kwargs, device="cpu", seed=0) -> None:
    """Triton against the torch path on ``stacked``: one-hot per group bit for bit, random
    coefficients within the float32 error bound (and close to the torch result)."""
    from evolver_opt.merge.triton_merge import TritonGroupMatVec

    n_rows = stacked.shape[0]
    ours = torch.full((stacked.shape[1],), 7.0, dtype=out_dtype, device=device)
    ref = ours.clone()
    outside = torch.ones_like(ours, dtype=torch.bool)
    for s, e in spans:
        outside[s:e] = False
    kernel = TritonGroupMatVec(stacked, ours, spans, **backend_kwargs)
    torch_path = GroupMatVec(stacked, ref, spans, backend="torch")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_rows, size=len(spans))  # each group its own row: the gather
    one_hot = np.eye(n_rows)[picks]
    kernel(one_hot)
    for g, (s, e) in enumerate(spans):
        expected = stacked[picks[g], s:e].to(out_dtype)
        assert torch.equal(ours[s:e], expected), (g, int(picks[g]))
    for coef in (rng.normal(size=(len(spans), n_rows)), rng.uniform(size=(len(spans), n_rows))):
        kernel(coef)
        torch_path(coef)
        exact, bound = _error_bound(stacked.cpu(), spans, coef, out_dtype)
        inside = ~outside.cpu()
        err = (ours.cpu().double() - exact).abs()[inside]
        assert bool((err <= bound[inside]).all()), float((err / bound[inside]).max())
        tol = {torch.float32: 1e-6, torch.bfloat16: 2**-7}[out_dtype]
        torch.testing.assert_close(ours.float(), ref.float(), rtol=tol, atol=1e-6)
    assert bool((ours[outside] == 7.0).all())  # nothing written outside the spans


def test_block_table_cuts_spans_without_straddling():
    spans = [(0, 5), (5, 5), (5, 40), (40, 40 + 3 * 64 + 3), (235, 300), (300, 301)]
    table = block_table(spans, block=64, align=16)
    covered = np.zeros(301, dtype=int)
    for start, end, g in table:
        s, e = spans[g]
        assert s <= start < end <= e and end - start <= 64
        if end - start == 64:
            assert start % 16 == 0
        covered[start:end] += 1
    assert (covered == 1).all()  # every element once; the empty span has no block
    assert sum(1 for s, e, _ in table if e - s == 64) == 2  # 48:112, 112:176
    with pytest.raises(ConfigError, match="multiple of align"):
        block_table(spans, block=40, align=16)


def test_cpu_stays_on_torch_unless_asked(monkeypatch):
    rows, out = torch.zeros(3, 10), torch.zeros(10)
    monkeypatch.delenv(ENV, raising=False)
    assert GroupMatVec(rows, out, [(0, 10)]).mode == "mv"  # auto: CPU tensors, torch
    monkeypatch.setenv(ENV, "maybe")
    with pytest.raises(ConfigError, match="EVOLVER_OPT_TRITON"):
        GroupMatVec(rows, out, [(0, 10)])
    monkeypatch.setenv(ENV, "1")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ConfigError, match="Triton"):
        GroupMatVec(rows, out, [(0, 10)])
    monkeypatch.setenv(ENV, "0")
    assert GroupMatVec(rows, out, [(0, 10)], backend="torch").mode == "mv"
    with pytest.raises(ConfigError, match="backend"):
        GroupMatVec(rows, out, [(0, 10)], backend="cuda")


def test_kernel_matches_torch_on_spans_of_every_shape(interpret):
    gen = torch.Generator().manual_seed(0)
    spans = [(0, 5), (5, 5), (5, 40), (40, 235), (237, 300), (300, 333), (340, 980)]  # gaps
    for rows_dtype, out_dtype in DTYPES.values():
        stacked = torch.randn(4, 1000, generator=gen).to(rows_dtype)
        _compare(stacked, spans, out_dtype, backend_kwargs={"block": SMALL_BLOCK})


def test_bfloat16_rounds_to_nearest_even_like_torch(interpret):
    """float32 rows into a bfloat16 model: ties, overflow, subnormals, inf and NaN as torch."""
    from evolver_opt.merge.triton_merge import TritonGroupMatVec

    one = 1.0
    special = [one + 2**-8, one + 3 * 2**-8, -(one + 2**-8), 3.3895e38, 3.4e38, 1e-39, -1e-40,
               float("inf"), -float("inf"), float("nan"), 0.0, -0.0]  # fmt: skip
    row = torch.tensor(special + [0.1 * i for i in range(52)], dtype=torch.float32)
    stacked = torch.stack([torch.zeros_like(row), row])
    out = torch.empty(row.numel(), dtype=torch.bfloat16)
    TritonGroupMatVec(stacked, out, [(0, row.numel())], block=SMALL_BLOCK)(np.array([[0.0, 1.0]]))
    expected = row.to(torch.bfloat16)
    assert torch.equal(out.isnan(), expected.isnan())
    bits = ~expected.isnan() & (expected != 0)  # zeros compare equal whatever their sign
    assert torch.equal(out[bits].view(torch.int16), expected[bits].view(torch.int16))
    assert (out[expected == 0] == 0).all()


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_kernel_matches_torch_engine(interpret, family, granularity, dtype):
    rows_dtype, out_dtype = DTYPES[dtype]
    engine = _engine(family, granularity, rows_dtype)
    spans = engine.layout.group_spans
    _compare(engine.stacked, spans, out_dtype, backend_kwargs={})


def _logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs)
    return (out.logits if hasattr(out, "logits") else out[0]).float()


def test_engine_runs_triton_when_asked(interpret, monkeypatch, family):
    """``EVOLVER_OPT_TRITON=1``: the engine's merges (and a model dtype switch) go through the
    kernel; the working model's outputs equal the torch engine's for one-hot merges."""
    ref = _engine(family, "layer", torch.float32)
    monkeypatch.setenv(ENV, "1")
    engine = MergeEngine.from_dirs(family.base, family.models, granularity="layer")
    assert engine.kernel_mode == "triton" and ref.kernel_mode == "mv"
    for i in range(engine.n_models):
        engine.apply(engine.one_hot(i))
        ref.apply(ref.one_hot(i))
        assert torch.equal(engine.output, ref.output)
        assert torch.equal(_logits(engine.model, family.inputs), _logits(ref.model, family.inputs))
    c = np.random.default_rng(1).uniform(size=(engine.n_models, engine.n_groups))
    engine.apply(c)
    ref.apply(c)
    torch.testing.assert_close(engine.output, ref.output, rtol=1e-6, atol=1e-6)
    with engine.model_precision(torch.bfloat16), ref.model_precision(torch.bfloat16):
        assert engine.kernel_mode == "triton"
        torch.testing.assert_close(engine.output.float(), ref.output.float(), rtol=2**-7, atol=1e-6)


# -- the compiled kernel on a CUDA device ------------------------------------------------
@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_cuda_kernel_matches_torch_engine(compiled, family, granularity, dtype):
    rows_dtype, out_dtype = DTYPES[dtype]
    engine = _engine(family, granularity, rows_dtype, device="cuda")
    spans = engine.layout.group_spans
    for kwargs in ({}, {"block": SMALL_BLOCK}):
        _compare(engine.stacked, spans, out_dtype, backend_kwargs=kwargs, device="cuda")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_cuda_kernel_on_a_large_random_layout(compiled, dtype):
    """Millions of weights in spans of every size (aligned or not): full vector blocks."""
    rows_dtype, out_dtype = DTYPES[dtype]
    rng = np.random.default_rng(0)
    sizes = np.concatenate([rng.integers(1, 100, 50), rng.integers(1, 400_000, 40) * 16, [0, 7]])
    rng.shuffle(sizes)
    ends = np.cumsum(sizes)
    spans = list(zip([0, *ends[:-1].tolist()], ends.tolist()))
    stacked = torch.randn(5, int(ends[-1]), device="cuda").to(rows_dtype)
    _compare(stacked, spans, out_dtype, backend_kwargs={}, device="cuda")


@pytest.mark.gpu
@cuda
def test_cuda_engine_picks_triton_unless_switched_off(compiled, monkeypatch, families):
    fam = families["bert"]
    auto = MergeEngine.from_dirs(fam.base, fam.models, granularity="tensor", device="cuda")
    monkeypatch.setenv(ENV, "0")
    off = MergeEngine.from_dirs(fam.base, fam.models, granularity="tensor", device="cuda")
    assert auto.kernel_mode == "triton" and off.kernel_mode != "triton"
    for i in range(auto.n_models):
        auto.apply(auto.one_hot(i))
        off.apply(off.one_hot(i))
        assert torch.equal(auto.output, off.output)
