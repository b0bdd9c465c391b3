"""One Triton kernel for an LLM.int8() weight back to a dense dtype, for the prefill's tensor-core GEMMs.

It computes what `decode.prefill_linears.dequantized_weight` computes with torch: int8 row n times its scale
SCB[n] / 127 in float32, rounded once to the GEMM's dtype. In torch that product of an int8 and a float32 tensor
runs PyTorch's casting elementwise kernel, which does not vectorise: on an H200 it moved idefics2-8b's int8 layers
at ~0.57 TB/s, 38.9 ms of an 8-bit prefill (docs/BENCHMARKS.md). This kernel reads the int8 bytes and writes the
result in wide vectors.
"""

# Triton's @jit kernels take launch options (num_warps) and tl.constexpr parameters that its types do not describe.
# pyright: reportCallIssue=false, reportArgumentType=false, reportGeneralTypeIssues=false

from __future__ import annotations

import torch

from .triton_support import tl, tl_dtype, triton

# Columns per program: 4 KiB of int8 read and 8 KiB of bf16 written.
BLOCK = 4096


if triton is not None:

    @triton.jit
    def _dequantize_kernel(quantized, scales, out, K, OUT_DTYPE: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        columns = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        ok = columns < K
        scale = tl.load(scales + row)
        values = tl.load(quantized + row.to(tl.int64) * K + columns, mask=ok, other=0).to(tl.float32)
        tl.store(out + row.to(tl.int64) * K + columns, (values * scale).to(OUT_DTYPE), mask=ok)


def row_scales_of(scales: torch.Tensor) -> torch.Tensor:
    """Each row's multiplier, SCB / 127 in float32, divided by torch as the torch form does (on a GPU torch divides
    by a scalar as a product with its reciprocal): the kernel then only multiplies."""
    return scales.to(torch.float32) / 127.0


def int8_dequantize(
    quantized: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype, row_scales: torch.Tensor | None = None
) -> torch.Tensor:
    """quantized int8 [N, K], scales [N] (LLM.int8()'s SCB, each row's absmax) → [N, K] of `dtype`; `row_scales`,
    when given, is `row_scales_of(scales)` kept from an earlier call (a weight's scales do not change)."""
    n, k = quantized.shape
    if row_scales is None:
        row_scales = row_scales_of(scales)
    out = torch.empty(n, k, dtype=dtype, device=quantized.device)
    _dequantize_kernel[(n, triton.cdiv(k, BLOCK))](
        quantized.contiguous(), row_scales, out, k, OUT_DTYPE=tl_dtype(dtype), BLOCK=BLOCK, num_warps=8
    )
    return out
