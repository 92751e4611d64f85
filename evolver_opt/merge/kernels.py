"""The hot loop: ``out[g] = W[:, g]^T a_g`` for every group span, into preallocated memory.

``W`` stacks the base and the N fine-tuned models as rows, ``(N + 1, P)``; ``a_g`` is
``(1 - sum_i c[i, g], c[0, g], ..., c[N-1, g])``. That is exactly
``theta_base + sum_i c[i, g] * (theta_i - theta_base)``, and a one-hot ``c`` returns model i
bit for bit in any dtype (every partial sum is 0 or theta_i).

float32/float64: ``torch.mv`` on strided views of the rows. The row-major ``(N+1, P)`` layout
beat an interleaved ``(P, N+1)`` one by 2x on CPU.
bfloat16/float16 rows: chunks of the rows are upcast into a float32 scratch, the same ``mv``
runs in float32 and the sum is rounded once. float32 rows into a bfloat16 working model (the
evaluation precision of a study): the float32 ``mv`` writes a scratch chunk that is rounded
once into the output. Rejected on CPU: torch's bfloat16 ``mv`` (0.1 of copy
bandwidth) and N + 1 in-dtype ``add_`` passes (0.6, but rounding N + 1 times at the weights'
magnitude, an error as large as a fine-tuning delta).

On CPU the spans are cut into cache-sized chunks shared among a few Python workers, each
running torch single-threaded. With torch's own threads on every op, a loaded 2-core machine
fell to 0.02 of copy bandwidth in the bfloat16 path (each small op waits for a descheduled
thread); the workers held 0.6, and in float32 they beat one threaded ``mv`` by 1.4x.

On CUDA, where Triton imports, the whole merge is one fused launch instead
(:mod:`evolver_opt.merge.triton_merge`, ``mode == "triton"``); ``$EVOLVER_OPT_TRITON=0`` or
``backend="torch"`` keeps the torch path, which stays the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from evolver_opt.merge.triton_merge import TritonGroupMatVec, use_triton

_MV_DTYPES = (torch.float32, torch.float64)
_CPU_CHUNK = 1 << 18


class GroupMatVec:
    """Preallocated per-group weighted sum of the stacked rows, written into ``out``."""

    def __init__(
        self,
        stacked: torch.Tensor,
        out: torch.Tensor,
        spans: Sequence[tuple[int, int]],
        chunk: int | None = None,
        workers: int | None = None,
        backend: str = "auto",
    ) -> None:
        self.stacked, self.out = stacked, out
        self._triton = None
        if use_triton(stacked, out, backend):  # auto: CUDA tensors and triton imports
            self._triton = TritonGroupMatVec(stacked, out, spans)
            self.mode, self.workers, self._pool = "triton", 1, None
            return
        self.upcast = stacked.dtype not in _MV_DTYPES
        self.round = not self.upcast and out.dtype != stacked.dtype  # e.g. float32 -> bfloat16
        self.mode = "chunked" if self.upcast else ("mv-round" if self.round else "mv")
        acc = torch.float32 if self.upcast else stacked.dtype
        rows, device = stacked.shape[0], stacked.device
        on_cpu = device.type == "cpu"
        self.coef = torch.zeros(len(spans), rows, dtype=acc, device=device)
        coef_rows = list(self.coef)  # views, refreshed in place by copy_
        if chunk is None:
            chunk = _CPU_CHUNK if on_cpu else (1 << 62 if self.mode == "mv" else 1 << 22)
        pieces = [
            (a, min(e, a + chunk), coef_rows[g])
            for g, (s, e) in enumerate(spans)
            for a in range(s, e, chunk)
        ]
        if workers is None:
            workers = min(torch.get_num_threads(), 8) if on_cpu else 1
        self.workers = max(1, min(workers, len(pieces)))
        self._parts = []
        for w in range(self.workers):
            mine = pieces[w :: self.workers]
            views = [
                (stacked[:, s:e] if self.upcast else stacked[:, s:e].t(), out[s:e], a)
                for s, e, a in mine
            ]
            longest = max((e - s for s, e, _ in mine), default=0) if self.mode != "mv" else 0
            scratch = torch.empty(rows if self.upcast else 0, longest, dtype=acc, device=device)
            self._parts.append((views, scratch, torch.empty(longest, dtype=acc, device=device)))
        self._pool = ThreadPoolExecutor(self.workers) if self.workers > 1 else None

    def __call__(self, coef: np.ndarray) -> None:
        """Write the merge for ``coef`` shaped ``(n_groups, N + 1)`` into ``out``."""
        if self._triton is not None:
            self._triton(coef)
            return
        self.coef.copy_(torch.from_numpy(np.ascontiguousarray(coef)))
        if self._pool is None:
            self._run(0)
            return
        threads = torch.get_num_threads()
        try:
            list(self._pool.map(self._run, range(self.workers)))
        finally:
            torch.set_num_threads(threads)

    def _run(self, worker: int) -> None:
        if self._pool is not None:
            torch.set_num_threads(1)  # this worker's ops stay on its own core
        views, scratch, acc = self._parts[worker]
        if self.mode == "mv":
            for wt, o, a in views:
                torch.mv(wt, a, out=o)
            return
        if self.round:
            for wt, o, a in views:
                n = o.numel()
                torch.mv(wt, a, out=acc[:n])
                o.copy_(acc[:n])
            return
        for w, o, a in views:
            n = o.numel()
            part = scratch[:, :n]
            part.copy_(w)
            torch.mv(part.t(), a, out=acc[:n])
            o.copy_(acc[:n])
