"""One Triton kernel for a bitsandbytes 4-bit weight (nf4 / fp4, absmax not nested) back to a dense dtype, for the
prefill's tensor-core GEMMs.

It computes what `bitsandbytes.functional.dequantize_4bit` computes: each weight is code[nibble] times its block's
absmax in float32 (the first of a byte's two weights in its high nibble), rounded once to the output dtype. The GPU
work is the same as bitsandbytes' kernel; the host's is not. A prefill dequantises each of idefics2-8b's ~600 4-bit
layers, and bitsandbytes' Python path (a state copy for the dtype, checks, an output allocation, a dispatched op)
held the host longer than the GPU took for the layer's dequantisation and GEMM together: the GPU waited on it
(`scripts/gpu/prefill_timeline.py`, docs/BENCHMARKS.md). Nested (double-quantised) absmax keeps bitsandbytes' path.
"""

# Triton's @jit kernels take launch options (num_warps) and tl.constexpr parameters that its types do not describe.
# pyright: reportCallIssue=false, reportArgumentType=false, reportGeneralTypeIssues=false

from __future__ import annotations

import torch

from .triton_support import tl, tl_dtype, triton

# Weights per program: 4 KiB of packed codes read, 16 KiB of bf16 written.
BLOCK = 8192


if triton is not None:

    @triton.jit
    def _dequantize_kernel(packed, absmax, code, out, TOTAL, BLOCKSIZE: tl.constexpr, OUT_DTYPE: tl.constexpr,
                           BLOCK: tl.constexpr):  # fmt: skip
        pairs = tl.program_id(0).to(tl.int64) * (BLOCK // 2) + tl.arange(0, BLOCK // 2)
        ok = pairs * 2 < TOTAL
        byte = tl.load(packed + pairs, mask=ok, other=0).to(tl.int32)
        # A block holds an even number of weights, so both of a byte's weights share its absmax.
        scale = tl.load(absmax + (pairs * 2) // BLOCKSIZE, mask=ok, other=0.0)
        high = tl.load(code + (byte >> 4)) * scale
        low = tl.load(code + (byte & 15)) * scale
        values = tl.reshape(tl.join(high, low), [BLOCK])
        weights = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        tl.store(out + weights, values.to(OUT_DTYPE), mask=weights < TOTAL)


def supported(state: object) -> bool:
    """Whether the kernel reads this QuantState: absmax not nested, an even block size."""
    return not getattr(state, "nested", False) and int(getattr(state, "blocksize", 1)) % 2 == 0


def four_bit_dequantize(packed: torch.Tensor, state: object, dtype: torch.dtype) -> torch.Tensor:
    """packed uint8 codes (Params4bit's data) and their QuantState (absmax not nested) → [out, in] of `dtype`."""
    shape = tuple(state.shape)  # type: ignore[attr-defined]
    out = torch.empty(shape, dtype=dtype, device=packed.device)
    total = out.numel()
    _dequantize_kernel[(triton.cdiv(total, BLOCK),)](
        packed,
        state.absmax,  # type: ignore[attr-defined]
        state.code,  # type: ignore[attr-defined]
        out,
        total,
        BLOCKSIZE=int(state.blocksize),  # type: ignore[attr-defined]
        OUT_DTYPE=tl_dtype(dtype),
        BLOCK=BLOCK,
        num_warps=8,
    )
    return out
