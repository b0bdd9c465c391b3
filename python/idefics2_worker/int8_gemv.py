"""A Triton kernel for bitsandbytes' LLM.int8() product at 1-8 rows, for the decode step.

It computes what bitsandbytes computes for a batch of one per row: the int8 product of the quantised input and
weight, summed exactly in int32, scaled by the row and column absmax / 127² and rounded to float16 (bitsandbytes'
dequant kernel), then the outlier columns' product with the dequantised weight added in float32. Only the order
of float32 additions in the outlier term differs. bitsandbytes' own forward cannot be captured in a CUDA graph
and, at batch 1, spends ~250-650 µs per layer; this kernel takes 6-32 µs (docs/BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .triton_support import MAX_ROWS, tl, tl_dtype, triton


@dataclass(frozen=True)
class Tiling:
    """Outputs per program, weights per step along K, and warps per program."""

    outputs: int = 8
    columns: int = 1024
    warps: int = 4


DEFAULT_TILING = Tiling()


def tiling_for(outputs: int, rows: int) -> Tiling:
    """The fastest tiling measured on an H100 at idefics2-8b's shapes (scripts/tune_decode_kernels.py): shorter
    steps along K for several rows (more accumulators live) and for wide layers (more programs in flight)."""
    return Tiling(columns=512) if rows > 1 or outputs >= 8192 else DEFAULT_TILING


if triton is not None:

    @triton.jit
    def _eight_bit_kernel(quantized, outliers, weight, row_absmax, weight_absmax, out, N, K: tl.constexpr,
                          ROWS: tl.constexpr, ROWS_P2: tl.constexpr, OUT_DTYPE: tl.constexpr,
                          BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
        # Program: BLOCK_N outputs of every input row; each weight block is read once and used for all rows.
        # The outlier term is skipped for blocks where a row has no outlier (most of them).
        outputs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        output_ok = outputs < N
        column = tl.arange(0, BLOCK_K)
        row = tl.arange(0, ROWS_P2)
        exact = tl.zeros([BLOCK_N, ROWS_P2], dtype=tl.int32)
        extra = tl.zeros([BLOCK_N, ROWS_P2], dtype=tl.float32)
        for start in range(0, K, BLOCK_K):
            col = start + column
            col_ok = col < K
            ok = output_ok[:, None] & col_ok[None, :]
            w = tl.load(weight + outputs[:, None] * K + col[None, :], mask=ok, other=0)
            wide = w.to(tl.int32)
            for r in tl.static_range(ROWS):
                a = tl.load(quantized + r * K + col, mask=col_ok, other=0)
                part = tl.sum(wide * a.to(tl.int32)[None, :], axis=1)
                exact = tl.where(row[None, :] == r, exact + part[:, None], exact)
                o = tl.load(outliers + r * K + col, mask=col_ok, other=0.0)
                if tl.max(tl.abs(o), axis=0) > 0.0:
                    more = tl.sum(w.to(tl.float32) * o[None, :], axis=1)
                    extra = tl.where(row[None, :] == r, extra + more[:, None], extra)
        column_scale = tl.load(weight_absmax + outputs, mask=output_ok, other=0.0)[:, None]
        row_scale = tl.load(row_absmax + row, mask=row < ROWS, other=0.0)[None, :]
        main = (exact.to(tl.float32) * (row_scale * column_scale) * 6.200124e-05).to(tl.float16)
        result = main.to(OUT_DTYPE).to(tl.float32) + extra * column_scale * 7.874015718698502e-3
        store_ok = output_ok[:, None] & (row[None, :] < ROWS)
        tl.store(out + row[None, :] * N + outputs[:, None], result.to(OUT_DTYPE), mask=store_ok)


def eight_bit_gemv(
    quantized: torch.Tensor,
    outliers: torch.Tensor,
    weight: torch.Tensor,
    row_absmax: torch.Tensor,
    weight_absmax: torch.Tensor,
    dtype: torch.dtype,
    tiling: Tiling | None = None,
) -> torch.Tensor:
    """quantized int8 [rows, K], outliers float32 [rows, K] (zero off the outlier columns) → dtype [rows, N]."""
    n, k = weight.shape
    out = torch.empty(quantized.shape[0], n, dtype=dtype, device=quantized.device)
    for first in range(0, quantized.shape[0], MAX_ROWS):
        rows = min(MAX_ROWS, quantized.shape[0] - first)
        chosen = tiling or tiling_for(n, rows)
        _eight_bit_kernel[(triton.cdiv(n, chosen.outputs),)](
            quantized[first:],
            outliers[first:],
            weight,
            row_absmax[first:],
            weight_absmax,
            out[first:],
            n,
            K=k,
            ROWS=rows,
            ROWS_P2=triton.next_power_of_2(rows),
            OUT_DTYPE=tl_dtype(dtype),
            BLOCK_N=chosen.outputs,
            BLOCK_K=chosen.columns,
            num_warps=chosen.warps,
        )
    return out
