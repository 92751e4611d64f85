"""The hot loop: ``out[g] = W[:, g]^T a_g`` for every group span, into preallocated memory.

``W`` stacks the base and the N fine-tuned models as rows, ``(N + 1, P)``; ``a_g`` is
``(1 - sum_i c[i, g], c[0, g], ..., c[N-1, g])``. That is exactly
``theta_base + sum_i c[i, g] * (theta_i - theta_base)``, and a one-hot ``c`` returns model i
bit for bit in any dtype (every partial sum is 0 or theta_i).

float32/float64: one ``torch.mv`` per group on a strided view (measured 0.8 of copy bandwidth
on a 2-core CPU; the row-major ``(N+1, P)`` layout beat an interleaved ``(P, N+1)`` one by 2x).
bfloat16/float16: the same product on chunks upcast into a small float32 scratch, so the
sum is rounded once; torch's reduced-precision ``mv`` on CPU was 10x slower than copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

_FAST = (torch.float32, torch.float64)


class GroupMatVec:
    """Preallocated per-group matrix-vector product writing into ``out``."""

    def __init__(
        self,
        stacked: torch.Tensor,
        out: torch.Tensor,
        spans: Sequence[tuple[int, int]],
        chunk: int | None = None,
    ) -> None:
        self.stacked, self.out = stacked, out
        rows = stacked.shape[0]
        self.exact = stacked.dtype in _FAST
        acc = stacked.dtype if self.exact else torch.float32
        self.coef = torch.zeros(len(spans), rows, dtype=acc, device=stacked.device)
        self._coef_rows = list(self.coef)  # views, refreshed in place by copy_
        self._pieces: list[tuple[int, int, int]] = []
        if self.exact:
            self._pieces = [(s, e, g) for g, (s, e) in enumerate(spans) if e > s]
            self._views = [(stacked[:, s:e].t(), out[s:e], g) for s, e, g in self._pieces]
            return
        if chunk is None:
            chunk = 1 << 18 if stacked.device.type == "cpu" else 1 << 22
        for g, (s, e) in enumerate(spans):
            for a in range(s, e, chunk):
                self._pieces.append((a, min(e, a + chunk), g))
        longest = max((e - s for s, e, _ in self._pieces), default=0)
        self.scratch = torch.empty(rows, longest, dtype=acc, device=stacked.device)
        self.acc = torch.empty(longest, dtype=acc, device=stacked.device)

    def __call__(self, coef: np.ndarray) -> None:
        """Write the merge for ``coef`` shaped ``(n_groups, N + 1)`` into ``out``."""
        self.coef.copy_(torch.from_numpy(np.ascontiguousarray(coef)))
        rows = self._coef_rows
        if self.exact:
            for wt, o, g in self._views:
                torch.mv(wt, rows[g], out=o)
            return
        stacked, out, scratch, acc = self.stacked, self.out, self.scratch, self.acc
        for s, e, g in self._pieces:
            n = e - s
            part = scratch[:, :n]
            part.copy_(stacked[:, s:e])
            torch.mv(part.t(), rows[g], out=acc[:n])
            out[s:e].copy_(acc[:n])
