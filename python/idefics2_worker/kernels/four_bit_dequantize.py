"""One Triton kernel for a bitsandbytes 4-bit weight (nf4 / fp4, absmax not nested) back to a dense dtype, for the
prefill's tensor-core GEMMs.

It computes what `bitsandbytes.functional.dequantize_4bit` computes: each weight is code[nibble] times its block's
absmax in float32 (the first of a byte's two weights in its high nibble), rounded once to the output dtype. The GPU
work is the same as bitsandbytes' kernel; the host's is not. A prefill dequantises each of idefics2-8b's ~600 4-bit
layers, and bitsandbytes' Python path (a state copy for the dtype, checks, an output allocation, a dispatched op)
held the host longer than the GPU took for the layer's dequantisation and GEMM together: the GPU waited on it
(`scripts/gpu/prefill_timeline.py`, docs/BENCHMARKS.md). Nested (double-quantised) absmax keeps bitsandbytes' path.
It reads the layout the worker packs decode's layers into (`four_bit_packing`) as well, so the prefill needs no
second copy of them.
"""

# Triton's @jit kernels take launch options (num_warps) and tl.constexpr parameters that its types do not describe.
# pyright: reportCallIssue=false, reportArgumentType=false, reportGeneralTypeIssues=false

from __future__ import annotations

import torch

from .four_bit_packing import PackedFourBit
from .triton_support import tl, tl_dtype, triton

# Weights per program: 4 KiB of packed codes read, 16 KiB of bf16 written.
BLOCK = 8192
# Bytes along K per program of the packed layout's kernel (16 outputs: 4 KiB read, as above).
PACKED_COLUMNS = 256


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

    @triton.jit
    def _dequantize_packed_kernel(weights, scales, code, out, INPUTS: tl.constexpr, BLOCKSIZE: tl.constexpr,
                                  OUT_DTYPE: tl.constexpr, COLUMNS: tl.constexpr):  # fmt: skip
        # four_bit_packing's layout, a program per tile (16 outputs) and COLUMNS bytes along K: output (half, g)'s byte
        # c lies at step c // 32, lane (g, t = c % 32 // 8), half, byte c % 8, so runs of 8 bytes load contiguous and
        # each output's weights store contiguous (a gather byte by byte instead took 10.6 ms a prefill, bitsandbytes'
        # layout 6.3: H50).
        tile = tl.program_id(0).to(tl.int64)
        rows = tl.arange(0, 16)[:, None]
        columns = tl.program_id(1) * COLUMNS + tl.arange(0, COLUMNS)[None, :]
        step, t, byte = columns // 32, columns % 32 // 8, columns % 8
        source = tile * (INPUTS // 64) * 512 + step * 512 + (rows % 8) * 64 + t * 16 + (rows // 8) * 8 + byte
        value = tl.load(weights + source).to(tl.int32)
        block = columns * 2 // BLOCKSIZE
        scale = tl.load(scales + ((tile * (INPUTS // BLOCKSIZE) + block) * 8 + rows % 8) * 2 + rows // 8)
        high = tl.load(code + (value >> 4)) * scale
        low = tl.load(code + (value & 15)) * scale
        values = tl.reshape(tl.join(high, low), [16, 2 * COLUMNS])
        at = (tile * 16 + rows) * INPUTS + tl.program_id(1) * (2 * COLUMNS) + tl.arange(0, 2 * COLUMNS)[None, :]
        tl.store(out + at, values.to(OUT_DTYPE))


def supported(state: object) -> bool:
    """Whether the kernel reads this QuantState: absmax not nested, an even block size."""
    return not getattr(state, "nested", False) and int(getattr(state, "blocksize", 1)) % 2 == 0


def four_bit_dequantize(
    packed: torch.Tensor, state: object, dtype: torch.dtype, layer: PackedFourBit | None = None
) -> torch.Tensor:
    """packed uint8 codes (Params4bit's data) and their QuantState (absmax not nested) → [out, in] of `dtype`; with
    `layer`, the codes and absmax are read from it, in `four_bit_packing`'s layout, instead."""
    shape = tuple(state.shape)  # type: ignore[attr-defined]
    out = torch.empty(shape, dtype=dtype, device=packed.device)
    if layer is not None:
        inputs = shape[1]
        columns = PACKED_COLUMNS if (inputs // 2) % PACKED_COLUMNS == 0 else 32  # a step's 32 bytes always divide
        _dequantize_packed_kernel[(shape[0] // 16, inputs // 2 // columns)](
            layer.weights,
            layer.scales,
            state.code,  # type: ignore[attr-defined]
            out,
            INPUTS=inputs,
            BLOCKSIZE=int(state.blocksize),  # type: ignore[attr-defined]
            OUT_DTYPE=tl_dtype(dtype),
            COLUMNS=columns,
            num_warps=8,
        )
        return out
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
