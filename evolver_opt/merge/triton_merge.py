"""The whole merge in one Triton launch: ``out[span g] = sum_k a_g[k] * stacked[k, span g]``.

The same sum as :class:`~evolver_opt.merge.kernels.GroupMatVec` (its torch path stays the
reference and the fallback), fused: each program reads one block of every row once, fetches
its group's coefficients inside the kernel, accumulates in float32 and writes the block once
in ``out``'s dtype. The traffic is (N + 1) reads and one write per weight whatever the
granularity, where the torch path launches one ``mv`` (plus casts in bfloat16) per span.

Blocks never straddle two groups: a block table built once at setup cuts every group span
into an unaligned head (up to the next multiple of ``ALIGN`` elements), full ``block``-sized
blocks starting on a multiple of ``ALIGN`` (loaded unmasked, vectorized) and a masked tail.
A one-hot coefficient vector returns model i bit for bit (every other term adds a zero).

Which path runs (:func:`use_triton`): ``$EVOLVER_OPT_TRITON`` = ``0`` keeps torch, ``1``
demands Triton (an error where it cannot run), unset or ``auto`` takes Triton for CUDA
tensors when it imports. Triton's interpreter (``TRITON_INTERPRET=1``) runs the kernel on CPU
tensors, in NumPy, when asked explicitly; the tests check the kernel's logic that way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from evolver_opt.errors import ConfigError

ENV = "EVOLVER_OPT_TRITON"
BACKENDS = ("auto", "torch", "triton")
ALIGN = 16  # elements: a full block starts on a multiple (16 B or more for every dtype)
BLOCK = 2048  # elements per program
NUM_WARPS = 8
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def interpreting() -> bool:
    """True when Triton's interpreter is on (``TRITON_INTERPRET=1``, read as Triton reads it)."""
    if _import_error() is not None:
        return False
    import triton

    return bool(triton.knobs.runtime.interpret)


@lru_cache(maxsize=1)
def _import_error() -> str | None:
    try:
        import triton.language  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        return f"{type(exc).__name__}: {exc}"
    return None


def unsupported(stacked: torch.Tensor, out: torch.Tensor) -> str | None:
    """Why the Triton kernel cannot merge ``stacked`` into ``out`` here, or None if it can."""
    reason = _import_error()
    if reason is not None:
        return f"triton does not import ({reason}); pip install triton"
    if stacked.device.type != "cuda" and not interpreting():
        return f"Triton runs CUDA tensors; these are on {stacked.device} (TRITON_INTERPRET=1 off)"
    if stacked.device != out.device:
        return f"rows on {stacked.device}, output on {out.device}"
    for what, t in (("rows", stacked), ("output", out)):
        if t.dtype not in _DTYPES:
            return f"{what} dtype {t.dtype} (the kernel takes float32, bfloat16, float16)"
    if stacked.dim() != 2 or stacked.stride(1) != 1 or not out.is_contiguous():
        return "rows must be (N + 1, P) with contiguous rows and a contiguous output"
    return None


def use_triton(stacked: torch.Tensor, out: torch.Tensor, backend: str = "auto") -> bool:
    """Whether :class:`~evolver_opt.merge.kernels.GroupMatVec` runs the Triton kernel.

    ``backend="auto"`` defers to ``$EVOLVER_OPT_TRITON`` (``0``: torch, ``1``: Triton or an
    error, ``auto``/unset: Triton for CUDA tensors when it can run them). ``torch`` and
    ``triton`` decide directly; ``triton`` raises ``ConfigError`` where it cannot run."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r} is not one of {list(BACKENDS)}")
    if backend == "auto":
        env = os.environ.get(ENV, "auto").strip().lower() or "auto"
        choices = {"0": "torch", "1": "triton", "auto": "auto"}
        if env not in choices:
            raise ConfigError(f"${ENV}={env!r} is not one of {list(choices)}")
        backend = choices[env]
    if backend == "torch" or (backend == "auto" and stacked.device.type != "cuda"):
        return False  # auto never imports triton for CPU tensors
    reason = unsupported(stacked, out)
    if backend == "triton" and reason is not None:
        raise ConfigError(f"the Triton merge kernel cannot run: {reason}")
    return reason is None


def block_table(
    spans: Sequence[tuple[int, int]], block: int = BLOCK, align: int = ALIGN
) -> np.ndarray:
    """``(n_blocks, 3)`` int64 rows ``(start, end, group)``: every span cut into blocks of at
    most ``block`` elements inside one group; a block of exactly ``block`` elements starts on
    a multiple of ``align`` (the kernel's unmasked path relies on it)."""
    if block % align or block <= align:
        raise ConfigError(f"block={block} must be a multiple of align={align} above it")
    rows: list[tuple[int, int, int]] = []
    for g, (s, e) in enumerate(spans):
        if e <= s:
            continue
        head = min(e, -(-s // align) * align)
        if head > s:
            rows.append((s, head, g))
        rows.extend((a, min(a + block, e), g) for a in range(head, e, block))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


@lru_cache(maxsize=2)
def _kernel(interpret: bool) -> Any:
    """The jitted kernel, decorated on first use and apart for the interpreter (Triton fixes
    interpretation when a function is decorated; ``interpret`` is the cache key)."""
    import triton

    from evolver_opt.merge import _triton_kernel

    return triton.jit(_triton_kernel.merge_blocks)


class TritonGroupMatVec:
    """The fused merge of ``stacked`` ``(N + 1, P)`` into ``out`` ``(P,)``, group by group.

    >>> k = TritonGroupMatVec(stacked, out, spans)  # doctest: +SKIP
    >>> k(coef)  # (n_groups, N + 1), rows a_g: out now holds the merge  # doctest: +SKIP
    """

    def __init__(
        self,
        stacked: torch.Tensor,
        out: torch.Tensor,
        spans: Sequence[tuple[int, int]],
        *,
        block: int = BLOCK,
        num_warps: int = NUM_WARPS,
    ) -> None:
        reason = unsupported(stacked, out)
        if reason is not None:
            raise ConfigError(f"the Triton merge kernel cannot run: {reason}")
        self.stacked, self.out, self.block, self.num_warps = stacked, out, block, num_warps
        device = stacked.device
        self.table = torch.from_numpy(block_table(spans, block)).to(device)
        self.n_blocks = int(self.table.shape[0])
        self.coef = torch.zeros(len(spans), stacked.shape[0], dtype=torch.float32, device=device)
        self._kernel = _kernel(interpreting())  # decorated now, while the setting holds

    def __call__(self, coef: np.ndarray) -> None:
        """Write the merge for ``coef`` shaped ``(n_groups, N + 1)`` into ``out`` (async on
        CUDA, like any kernel launch)."""
        self.coef.copy_(torch.from_numpy(np.ascontiguousarray(coef, dtype=np.float32)))
        if self.n_blocks == 0:
            return
        self._kernel[(self.n_blocks,)](
            self.stacked, self.out, self.table, self.coef, self.stacked.stride(0),
            ROWS=self.stacked.shape[0], BLOCK=self.block, ALIGN=ALIGN,
            ROUND_BF16=self.out.dtype == torch.bfloat16, num_warps=self.num_warps,
            enable_fp_fusion=True,  # a * x + acc as one FMA (said explicitly: Triton warns)
        )  # fmt: skip
