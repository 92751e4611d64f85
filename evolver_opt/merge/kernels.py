"""The hot loop: ``out[g] = W[:, g]^T a_g`` for every group span, into preallocated memory.

``W`` stacks the base and the N fine-tuned models as rows, ``(N + 1, P)``; ``a_g`` is
``(1 - sum_i c[i, g], c[0, g], ..., c[N-1, g])``. That is exactly
``theta_base + sum_i c[i, g] * (theta_i - theta_base)``, and a one-hot ``c`` returns model i
bit for bit in any dtype (every partial sum is 0 or theta_i).

float32/float64 ("mv"): one ``torch.mv`` per group on a strided view; on a 2-core CPU this
measured about 0.8 of copy bandwidth, and the row-major ``(N+1, P)`` layout beat an
interleaved ``(P, N+1)`` one by 2x.
bfloat16/float16 ("chunked"): chunks of the rows are upcast into a small float32 scratch, the
same ``mv`` runs in float32 and the sum is rounded once. Measured alternatives on CPU: torch's
bfloat16 ``mv`` reached 0.1 of copy bandwidth; N + 1 in-dtype ``add_`` passes reached 0.6
but round N + 1 times at the weights' magnitude, an error as large as a fine-tuning delta.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    ) -> None:
        self.stacked, self.out = stacked, out
        self.mode = "mv" if stacked.dtype in _MV_DTYPES else "chunked"
        acc = stacked.dtype if self.mode == "mv" else torch.float32
        rows = stacked.shape[0]
        self.coef = torch.zeros(len(spans), rows, dtype=acc, device=stacked.device)
        coef_rows = list(self.coef)  # views, refreshed in place by copy_
        if self.mode == "mv":
            self._mv = [
                (stacked[:, s:e].t(), out[s:e], coef_rows[g])
                for g, (s, e) in enumerate(spans)
                if e > s
            ]
            return
        if chunk is None:
            chunk = 1 << 18 if stacked.device.type == "cpu" else 1 << 22
        self._pieces = [
            (a, min(e, a + chunk), coef_rows[g])
            for g, (s, e) in enumerate(spans)
            for a in range(s, e, chunk)
        ]
        longest = max((e - s for s, e, _ in self._pieces), default=0)
        self.scratch = torch.empty(rows, longest, dtype=acc, device=stacked.device)
        self.acc = torch.empty(longest, dtype=acc, device=stacked.device)

    def __call__(self, coef: np.ndarray) -> None:
        """Write the merge for ``coef`` shaped ``(n_groups, N + 1)`` into ``out``."""
        self.coef.copy_(torch.from_numpy(np.ascontiguousarray(coef)))
        if self.mode == "mv":
            for wt, o, a in self._mv:
                torch.mv(wt, a, out=o)
            return
        stacked, out, scratch, acc = self.stacked, self.out, self.scratch, self.acc
        for s, e, a in self._pieces:
            n = e - s
            part = scratch[:, :n]
            part.copy_(stacked[:, s:e])
            torch.mv(part.t(), a, out=acc[:n])
            out[s:e].copy_(acc[:n])
