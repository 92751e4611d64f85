"""The Triton source of the fused merge (:mod:`evolver_opt.merge.triton_merge` decorates and
launches it). Imported only where triton is installed."""

from __future__ import annotations

import triton.language as tl


def merge_blocks(
    rows, out, table, coef, row_stride,
    ROWS: tl.constexpr, BLOCK: tl.constexpr, ALIGN: tl.constexpr, ROUND_BF16: tl.constexpr,
):  # fmt: skip
    """One program per block-table row ``(start, end, group)``: ``out[start:end] = sum_k
    coef[group, k] * rows[k, start:end]``, summed in float32 and rounded once to ``out``'s dtype.

    A block of exactly ``BLOCK`` elements starts on a multiple of ``ALIGN`` (the table says
    so): it loads and stores unmasked, so the compiler can vectorize. bfloat16 is rounded to
    nearest even by hand, as the GPU's own conversion does (the interpreter's truncates)."""
    pid = tl.program_id(0).to(tl.int64)
    start = tl.load(table + 3 * pid)
    end = tl.load(table + 3 * pid + 1)
    group = tl.load(table + 3 * pid + 2)
    lanes = tl.arange(0, BLOCK)
    # tl.full, not tl.zeros: a builtin, which the interpreter runs whenever triton was imported
    acc = tl.full([BLOCK], 0.0, tl.float32)
    full = end - start == BLOCK
    if full:
        offs = tl.multiple_of(start, ALIGN) + lanes
        for k in tl.static_range(ROWS):
            a = tl.load(coef + group * ROWS + k)
            acc += a * tl.load(rows + k * row_stride + offs).to(tl.float32)
    else:
        offs = start + lanes
        for k in tl.static_range(ROWS):
            a = tl.load(coef + group * ROWS + k)
            x = tl.load(rows + k * row_stride + offs, mask=offs < end, other=0.0)
            acc += a * x.to(tl.float32)
    if ROUND_BF16:
        bits = acc.to(tl.uint32, bitcast=True)
        even = bits + 0x7FFF + ((bits >> 16) & 1)
        nan = (bits & 0x7FFFFFFF) > 0x7F800000
        bits = tl.where(nan, bits | 0x400000, even)  # a NaN stays a (quiet) NaN
        value = (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        value = acc.to(out.dtype.element_ty)
    if full:  # offsets rebuilt here: alignment facts do not cross the first branch
        tl.store(out + tl.multiple_of(start, ALIGN) + lanes, value)
    else:
        tl.store(out + start + lanes, value, mask=start + lanes < end)
