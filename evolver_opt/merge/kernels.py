"""The hot loop: ``out[g] = W[:, g]^T a_g`` for every group span, into preallocated memory.

``W`` stacks the base and the N fine-tuned models as rows, ``(N + 1, P)``; ``a_g`` is
``(1 - sum_i c[i, g], c[0, g], ..., c[N-1, g])``. That is exactly
``theta_base + sum_i c[i, g] * (theta_i - theta_base)``, and a one-hot ``c`` returns model i
bit for bit in any dtype (every partial sum is 0 or theta_i).

float32/float64 ("mv"): one ``torch.mv`` per group on a strided view; on a 2-core CPU this
measured about 0.8 of copy bandwidth, and the row-major ``(N+1, P)`` layout beat an
interleaved ``(P, N+1)`` one by 2x.

bfloat16/float16 ("chunked"): cache-sized chunks of the rows are upcast into a float32
scratch, the same ``mv`` runs in float32 and the sum is rounded once. On CPU the chunks are
shared among a few Python workers, each running torch single-threaded: with torch's own
threads on every small op, a loaded 2-core machine fell to 0.02 of copy bandwidth (each op
waits for a descheduled thread); the workers held 0.6. Rejected on CPU: torch's bfloat16
``mv`` (0.1 of copy) and N + 1 in-dtype ``add_`` passes (0.6, but rounding N + 1 times at the
weights' magnitude, an error as large as a fine-tuning delta).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

_MV_DTYPES = (torch.float32, torch.float64)


class GroupMatVec:
    """Preallocated per-group weighted sum of the stacked rows, written into ``out``."""

    def __init__(
        self,
        stacked: torch.Tensor,
        out: torch.Tensor,
        spans: Sequence[tuple[int, int]],
        chunk: int | None = None,
        workers: int | None = None,
    ) -> None:
        self.stacked, self.out = stacked, out
        self.mode = "mv" if stacked.dtype in _MV_DTYPES else "chunked"
        acc = stacked.dtype if self.mode == "mv" else torch.float32
        rows, device = stacked.shape[0], stacked.device
        self.coef = torch.zeros(len(spans), rows, dtype=acc, device=device)
        coef_rows = list(self.coef)  # views, refreshed in place by copy_
        if self.mode == "mv":
            self._mv = [
                (stacked[:, s:e].t(), out[s:e], coef_rows[g])
                for g, (s, e) in enumerate(spans)
                if e > s
            ]
            return
        on_cpu = device.type == "cpu"
        chunk = chunk or (1 << 18 if on_cpu else 1 << 22)
        pieces = [
            (a, min(e, a + chunk), coef_rows[g])
            for g, (s, e) in enumerate(spans)
            for a in range(s, e, chunk)
        ]
        if workers is None:
            workers = min(torch.get_num_threads(), 8) if on_cpu else 1
        self.workers = max(1, min(workers, len(pieces)))
        longest = max((e - s for s, e, _ in pieces), default=0)
        self._parts = [
            (pieces[w :: self.workers],
             torch.empty(rows, longest, dtype=acc, device=device),
             torch.empty(longest, dtype=acc, device=device))
            for w in range(self.workers)
        ]  # fmt: skip
        self._pool = ThreadPoolExecutor(self.workers) if self.workers > 1 else None

    def __call__(self, coef: np.ndarray) -> None:
        """Write the merge for ``coef`` shaped ``(n_groups, N + 1)`` into ``out``."""
        self.coef.copy_(torch.from_numpy(np.ascontiguousarray(coef)))
        if self.mode == "mv":
            for wt, o, a in self._mv:
                torch.mv(wt, a, out=o)
            return
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
        pieces, scratch, acc = self._parts[worker]
        stacked, out = self.stacked, self.out
        for s, e, a in pieces:
            n = e - s
            part = scratch[:, :n]
            part.copy_(stacked[:, s:e])
            torch.mv(part.t(), a, out=acc[:n])
            out[s:e].copy_(acc[:n])
