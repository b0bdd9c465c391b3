"""One Triton kernel for a prefill GEMM's input in fp16, saturated: what `x.clamp(-limit, limit).to(float16)` computes.

Those two torch ops are two passes over the activations, and the cast runs PyTorch's unvectorised converting copy: on
an H200 a 4-bit prefill's 128 casts took ~2.9 ms, for ~1 ms of bytes (scripts/gpu/prefill_timeline.py, docs/
BENCHMARKS.md). This is one pass. Each value is clamped in float32 (exact for bf16, fp16 and float32 inputs: the
limit is an fp16 and a bf16 number) and rounded to fp16 to nearest, half to even, as torch's copy rounds; NaN stays NaN
(a comparison with NaN is false, as torch's clamp propagates it).
"""

# Triton's @jit kernels take launch options (num_warps) and tl.constexpr parameters that its types do not describe.
# pyright: reportCallIssue=false, reportArgumentType=false, reportGeneralTypeIssues=false

from __future__ import annotations

import torch

from .triton_support import tl, triton

# Values per program: 16 KiB of bf16 read, 16 KiB of fp16 written.
BLOCK = 8192


if triton is not None:

    @triton.jit
    def _saturating_cast_kernel(x, out, TOTAL, LIMIT: tl.constexpr, BLOCK: tl.constexpr):
        index = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        ok = index < TOTAL
        value = tl.load(x + index, mask=ok, other=0.0).to(tl.float32)
        value = tl.where(value > LIMIT, LIMIT, tl.where(value < -LIMIT, -LIMIT, value))
        tl.store(out + index, value.to(tl.float16), mask=ok)


def saturating_float16(x: torch.Tensor, limit: float) -> torch.Tensor:
    """x in fp16, values beyond ±limit (an fp16 number) set to ±limit; same shape, contiguous."""
    x = x.contiguous()
    out = torch.empty(x.shape, dtype=torch.float16, device=x.device)
    total = x.numel()
    _saturating_cast_kernel[(triton.cdiv(total, BLOCK),)](x, out, total, LIMIT=limit, BLOCK=BLOCK, num_warps=8)
    return out
