"""Which precision the evaluation runs in: ``fp32``, ``bf16``, or ``auto`` (bf16 where the
hardware has it), and how far bfloat16 predictions agree with float32 ones.

``auto`` is bfloat16 on any CUDA device and on CPUs with bfloat16 matrix instructions (Intel AMX
``amx_bf16`` or AVX-512 ``avx512_bf16``, read from ``/proc/cpuinfo``), float32 elsewhere.
``$EVOLVER_OPT_PRECISION`` (``fp32`` or ``bf16``) decides ``auto`` instead, e.g. to keep a
machine's studies in float32.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from evolver_opt.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where a dtype is needed: study files load without it
    import torch

PRECISIONS = ("auto", "fp32", "bf16")
RESOLVED = ("fp32", "bf16")
ENV = "EVOLVER_OPT_PRECISION"
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# Below this argmax agreement with float32 on a start point, ``auto`` falls back to float32.
# A disagreement rate d moves a start point's accuracy by at most d, so 0.99 keeps every
# bfloat16 start-point score within 1 point of its float32 score; the experts measured here
# agree on 0.995-1.0 of their dev examples (benchmarks/eval_throughput.py).
MIN_AGREEMENT = 0.99


@lru_cache(maxsize=1)
def cpu_bf16_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, ...]:
    """The CPU's bfloat16 matrix-instruction flags (empty where none or unreadable)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return ()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    return tuple(f for f in CPU_BF16_FLAGS if f in flags)


def resolve(setting: str, device: str) -> str:
    """``fp32`` or ``bf16`` for a study's ``precision`` setting on ``device``."""
    if setting not in PRECISIONS:
        raise ConfigError(f"precision={setting!r} is not one of {list(PRECISIONS)}")
    if setting != "auto":
        return setting
    forced = os.environ.get(ENV)
    if forced:
        if forced not in RESOLVED:
            raise ConfigError(f"${ENV}={forced!r} is not one of {list(RESOLVED)}")
        return forced
    return "bf16" if hardware_bf16(device) else "fp32"


def hardware_bf16(device: str) -> str | None:
    """Why ``device`` runs bfloat16 matmuls natively (a short reason), or None."""
    kind = device.partition(":")[0]
    if kind == "cuda":
        return "CUDA device"
    if kind == "cpu":
        flags = cpu_bf16_flags()
        return f"CPU flags {', '.join(flags)}" if flags else None
    return None


def dtype_of(precision: str) -> torch.dtype:
    """The torch dtype of a resolved precision."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]


def agreement(reference: Sequence[torch.Tensor], other: Sequence[torch.Tensor]) -> float:
    """The fraction of examples whose predictions agree (argmax labels, aligned tensors)."""
    total = sum(len(r) for r in reference)
    if total == 0:
        return 1.0
    same = sum(int((r == o).sum()) for r, o in zip(reference, other, strict=True))
    return same / total
