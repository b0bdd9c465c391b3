"""A Triton kernel for bitsandbytes' 4-bit (nf4 / fp4) product with float32 compute, at 1-8 rows, for the decode step.

transformers' `BitsAndBytesConfig(load_in_4bit=True)` computes in float32 by default, and for one row
bitsandbytes runs its float32 GEMV: each weight dequantised as code[nibble] * block absmax in float32, times
the input cast to float32, summed in float32, the sum cast back to the input's dtype. This kernel computes those
same products; only the order of the float32 additions differs. bitsandbytes' float32 GEMV reads the weights
at ~350 GB/s on an H100 (9.97 of a 13.1 ms decode step, docs/BENCHMARKS.md), and the casts around it are two
more kernels per layer; this kernel reads the bf16 input and writes the bf16 output itself, and for several rows
dequantises each weight once and applies it to every row (bitsandbytes' batch path instead rounds the weights
to the model dtype first, which is not what one request alone computes).
"""

# Triton's @jit kernels take launch options (num_warps) and tl.constexpr parameters that its types do not describe.
# pyright: reportCallIssue=false, reportArgumentType=false, reportGeneralTypeIssues=false

from __future__ import annotations

from dataclasses import dataclass

import torch

from .triton_support import MAX_ROWS, tl, tl_dtype, triton


@dataclass(frozen=True)
class Tiling:
    """Outputs per program, quantisation blocks per step along K, and warps per program."""

    outputs: int = 16
    blocks: int = 8
    warps: int = 4


DEFAULT_TILING = Tiling()
# Narrow layers (idefics2-8b's k/v projections, 1,024 outputs) need more, smaller programs to fill the GPU.
NARROW_TILING = Tiling(outputs=8, blocks=16, warps=4)


def tiling_for(outputs: int) -> Tiling:
    """The fastest tiling measured on an H100 at idefics2-8b's shapes (scripts/gpu/tune_decode_kernels.py)."""
    return NARROW_TILING if outputs < 2048 else DEFAULT_TILING


if triton is not None:

    @triton.jit
    def _four_bit_kernel(x, packed, absmax, code, bias, out, N, K: tl.constexpr, ROWS: tl.constexpr,
                         ROWS_P2: tl.constexpr, QBLOCK: tl.constexpr, HAS_BIAS: tl.constexpr,
                         OUT_DTYPE: tl.constexpr, BLOCK_N: tl.constexpr, GROUPS: tl.constexpr):  # fmt: skip
        # Weight (n, k) is byte (n·K + k) // 2 of `packed`, high nibble first; absmax per QBLOCK weights.
        # A tile is [BLOCK_N outputs, GROUPS quantisation blocks, QBLOCK // 2 bytes]: each block's absmax is
        # loaded once, and the even / odd inputs meet the high / low nibbles without interleaving.
        HALF: tl.constexpr = QBLOCK // 2
        PER_ROW: tl.constexpr = K // QBLOCK
        outputs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        output_ok = outputs < N
        group = tl.arange(0, GROUPS)
        pair = tl.arange(0, HALF)
        row = tl.arange(0, ROWS_P2)
        acc = tl.zeros([BLOCK_N, ROWS_P2], dtype=tl.float32)
        for first in range(0, PER_ROW, GROUPS):
            blocks = first + group
            block_ok = blocks < PER_ROW
            scale_ok = output_ok[:, None] & block_ok[None, :]
            scale = tl.load(absmax + outputs[:, None] * PER_ROW + blocks[None, :], mask=scale_ok, other=0.0)
            byte_at = outputs[:, None, None] * (K // 2) + blocks[None, :, None] * HALF + pair[None, None, :]
            byte = tl.load(packed + byte_at, mask=scale_ok[:, :, None], other=0).to(tl.int32)
            high = tl.load(code + (byte >> 4)) * scale[:, :, None]
            low = tl.load(code + (byte & 15)) * scale[:, :, None]
            even_at = blocks[:, None] * QBLOCK + pair[None, :] * 2
            for r in tl.static_range(ROWS):
                even = tl.load(x + r * K + even_at, mask=block_ok[:, None], other=0.0).to(tl.float32)
                odd = tl.load(x + r * K + even_at + 1, mask=block_ok[:, None], other=0.0).to(tl.float32)
                part = tl.sum(tl.sum(high * even[None, :, :] + low * odd[None, :, :], axis=2), axis=1)
                acc = tl.where(row[None, :] == r, acc + part[:, None], acc)
        if HAS_BIAS:
            acc += tl.load(bias + outputs, mask=output_ok, other=0.0).to(tl.float32)[:, None]
        store_ok = output_ok[:, None] & (row[None, :] < ROWS)
        tl.store(out + row[None, :] * N + outputs[:, None], acc.to(OUT_DTYPE), mask=store_ok)


def four_bit_gemv(
    x: torch.Tensor,
    packed: torch.Tensor,
    absmax: torch.Tensor,
    code: torch.Tensor,
    shape: tuple[int, int],
    blocksize: int,
    bias: torch.Tensor | None = None,
    tiling: Tiling | None = None,
) -> torch.Tensor:
    """x [rows, K] (any float dtype) → [rows, N] in x's dtype; packed uint8 [N·K/2], absmax float32 [N·K/blocksize]."""
    n, k = shape
    if k % blocksize or blocksize % 2:
        raise ValueError(f"4-bit kernel needs K ({k}) a multiple of the block size ({blocksize})")
    x = x.contiguous()
    tiling = tiling or tiling_for(n)
    out = torch.empty(x.shape[0], n, dtype=x.dtype, device=x.device)
    for first in range(0, x.shape[0], MAX_ROWS):
        rows = min(MAX_ROWS, x.shape[0] - first)
        _four_bit_kernel[(triton.cdiv(n, tiling.outputs),)](
            x[first:],
            packed,
            absmax,
            code,
            bias if bias is not None else absmax,
            out[first:],
            n,
            K=k,
            ROWS=rows,
            ROWS_P2=triton.next_power_of_2(rows),
            QBLOCK=blocksize,
            HAS_BIAS=bias is not None,
            OUT_DTYPE=tl_dtype(x.dtype),
            BLOCK_N=tiling.outputs,
            GROUPS=tiling.blocks,
            num_warps=tiling.warps,
        )
    return out
