"""A Triton kernel for bitsandbytes' LLM.int8() product at 1-8 rows, for the decode step.

It computes what bitsandbytes computes for a batch of one per row: the int8 product of the quantised input and
weight, summed exactly in int32, scaled by the row and column absmax / 127² and rounded to float16 (bitsandbytes'
dequant kernel), then the outlier columns' product with the dequantised weight added in float32. Only the order
of float32 additions in the outlier term differs. bitsandbytes' own forward cannot be captured in a CUDA graph
and, at batch 1, spends ~250-330 µs per layer; this kernel takes 40-90 µs (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except Exception:  # no Triton (CPU torch builds): the caller computes the same sums with torch ops
    triton = None


# Outputs per program, and weights per step along K (256 bytes of each weight row).
BLOCK_N = 16
BLOCK_K = 256


def available(device: torch.device) -> bool:
    return triton is not None and device.type == "cuda"


if triton is not None:

    @triton.jit
    def _eight_bit_kernel(quantized, outliers, weight, row_absmax, weight_absmax, out, N, K: tl.constexpr,
                          OUT_DTYPE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
        # Program (row, block): BLOCK_N outputs of one input row. Programs of neighbouring rows run together
        # and read the same weight block, which they mostly find in L2.
        row = tl.program_id(0)
        outputs = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        output_ok = outputs < N
        column = tl.arange(0, BLOCK_K)
        exact = tl.zeros([BLOCK_N], dtype=tl.int32)
        extra = tl.zeros([BLOCK_N], dtype=tl.float32)
        for start in range(0, K, BLOCK_K):
            col = start + column
            col_ok = col < K
            ok = output_ok[:, None] & col_ok[None, :]
            w = tl.load(weight + outputs[:, None] * K + col[None, :], mask=ok, other=0)
            a = tl.load(quantized + row * K + col, mask=col_ok, other=0)
            o = tl.load(outliers + row * K + col, mask=col_ok, other=0.0)
            exact += tl.sum(w.to(tl.int32) * a.to(tl.int32)[None, :], axis=1)
            extra += tl.sum(w.to(tl.float32) * o[None, :], axis=1)
        column_scale = tl.load(weight_absmax + outputs, mask=output_ok, other=0.0)
        row_scale = tl.load(row_absmax + row)
        main = (exact.to(tl.float32) * (row_scale * column_scale) * 6.200124e-05).to(tl.float16)
        result = main.to(OUT_DTYPE).to(tl.float32) + extra * column_scale * 7.874015718698502e-3
        tl.store(out + row * N + outputs, result.to(OUT_DTYPE), mask=output_ok)


_TL_DTYPES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


def eight_bit_gemv(
    quantized: torch.Tensor,
    outliers: torch.Tensor,
    weight: torch.Tensor,
    row_absmax: torch.Tensor,
    weight_absmax: torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor:
    """quantized int8 [rows, K], outliers float32 [rows, K] (zero off the outlier columns) → dtype [rows, N]."""
    n, k = weight.shape
    rows = quantized.shape[0]
    out = torch.empty(rows, n, dtype=dtype, device=quantized.device)

    grid = (rows, triton.cdiv(n, BLOCK_N))
    _eight_bit_kernel[grid](
        quantized,
        outliers,
        weight,
        row_absmax,
        weight_absmax,
        out,
        n,
        K=k,
        OUT_DTYPE=getattr(tl, _TL_DTYPES[dtype]),
        BLOCK_N=BLOCK_N,
        BLOCK_K=BLOCK_K,
        num_warps=4,
    )
    return out
