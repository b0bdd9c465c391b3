"""A Triton kernel for bitsandbytes' 4-bit (nf4 / fp4) product with float32 compute, at 1-8 rows, for the decode step.

transformers' `BitsAndBytesConfig(load_in_4bit=True)` computes in float32 by default, and for one row bitsandbytes
runs its float32 GEMV: each weight dequantised as code[nibble] * block absmax in float32, times the input cast to
float32, summed in float32, the sum cast back to the input's dtype. This kernel computes the same sums in float32,
in another order: each quantisation block's code * input products are summed first and the sum scaled by the block's
absmax once (the products round differently by ~1 float32 ulp, far below bf16's step). bitsandbytes' float32 GEMV
reads the weights at ~350 GB/s on an H100 (9.97 of a 13.1 ms decode step, docs/BENCHMARKS.md), and the casts around
it are two more kernels per layer; this kernel reads the bf16 input and writes the bf16 output itself, and for
several rows dequantises each weight once and applies it to every row (bitsandbytes' batch path instead rounds the
weights to the model dtype first, which is not what one request alone computes).
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
    # Sums kept per lane (and row) until the end (see the kernel).
    defer: bool = False
    # Each row's sums in an order that does not depend on the rows launched with it (deterministic decoding).
    invariant: bool = False


# Deterministic decoding: one tiling at every row count, and the row-independent order.
INVARIANT_TILING = Tiling(invariant=True)
# Measured on an H200 at idefics2-8b's fused decode shapes (scripts/gpu/tune_decode_kernels.py, docs/BENCHMARKS.md):
# one row defers its reduction; gate/up (28,672 outputs) wants wider programs over fewer blocks. Four rows (the
# decode graph's size for 3 and 4 requests) take the 2-row tilings: 7.2 ms a token against 8.6 with the 8-row ones
# (H12). At 8 rows each row's sums stay per lane too, 16 outputs over 1 block (wide) or 2 (narrow): 14.7 ms a token
# against 16.1 reducing every step (H19). Rows 5-7 take the 8-row choice (the decode graph's rows are 8 there).
WIDE_OUTPUTS = 16384


def tiling_for(outputs: int, rows: int = 1) -> Tiling:
    """The fastest tiling measured for this many outputs and rows."""
    wide = outputs >= WIDE_OUTPUTS
    if rows <= 4:
        return Tiling(32, 4, 4) if wide else Tiling(16, 8, 4, defer=rows == 1)
    return Tiling(16, 1, 4, defer=True) if wide else Tiling(16, 2, 4, defer=True)


if triton is not None:

    @triton.jit
    def _four_bit_kernel(x, packed, absmax, code, bias, out, N, K: tl.constexpr, ROWS: tl.constexpr,
                         ROWS_P2: tl.constexpr, QBLOCK: tl.constexpr, HAS_BIAS: tl.constexpr,
                         OUT_DTYPE: tl.constexpr, BLOCK_N: tl.constexpr, GROUPS: tl.constexpr,
                         DEFER: tl.constexpr, INVARIANT: tl.constexpr):  # fmt: skip
        # Weight (n, k) is byte (n·K + k) // 2 of `packed`, high nibble first; absmax per QBLOCK weights.
        # A tile is [BLOCK_N outputs, GROUPS quantisation blocks, QBLOCK // 2 bytes]: each block's absmax is
        # loaded once, and the even / odd inputs meet the high / low nibbles without interleaving. A block's
        # products are summed before its absmax scales them (one multiply per block, not per weight).
        # The blocks' sums stay apart until the end; DEFER: the products too, reduced across lanes once (several
        # rows: [rows, outputs, blocks, bytes] of them, so the tiling must keep that within registers).
        # INVARIANT: each step's sum is folded into its row at once, an order that does not depend on ROWS.
        HALF: tl.constexpr = QBLOCK // 2
        PER_ROW: tl.constexpr = K // QBLOCK
        outputs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        output_ok = outputs < N
        group = tl.arange(0, GROUPS)
        pair = tl.arange(0, HALF)
        row = tl.arange(0, ROWS_P2)
        acc = tl.zeros([BLOCK_N, GROUPS, ROWS_P2], dtype=tl.float32)
        folded = tl.zeros([BLOCK_N, ROWS_P2], dtype=tl.float32)
        lanes = tl.zeros([BLOCK_N, GROUPS, HALF], dtype=tl.float32)
        row_lanes = tl.zeros([ROWS_P2, BLOCK_N, GROUPS, HALF], dtype=tl.float32)
        for first in range(0, PER_ROW, GROUPS):
            blocks = first + group
            block_ok = blocks < PER_ROW
            scale_ok = output_ok[:, None] & block_ok[None, :]
            scale = tl.load(absmax + outputs[:, None] * PER_ROW + blocks[None, :], mask=scale_ok, other=0.0)
            byte_at = outputs[:, None, None] * (K // 2) + blocks[None, :, None] * HALF + pair[None, None, :]
            byte = tl.load(packed + byte_at, mask=scale_ok[:, :, None], other=0).to(tl.int32)
            # The 16-entry code stays in one L1 line, so each lookup is one wavefront. (A 256-entry table of both
            # nibbles' values, one 8-byte lookup per byte, was 20-30% slower on an H200: its 2 KiB span 16 lines.)
            high = tl.load(code + (byte >> 4))
            low = tl.load(code + (byte & 15))
            even_at = blocks[:, None] * QBLOCK + pair[None, :] * 2
            if DEFER and ROWS > 1:
                # Every row's inputs at once ([rows, blocks, bytes]); each weight's looked-up value meets them all.
                x_at = row[:, None, None] * K + even_at[None, :, :]
                x_ok = (row < ROWS)[:, None, None] & block_ok[None, :, None]
                even = tl.load(x + x_at, mask=x_ok, other=0.0).to(tl.float32)
                odd = tl.load(x + x_at + 1, mask=x_ok, other=0.0).to(tl.float32)
                products = high[None, :, :, :] * even[:, None, :, :] + low[None, :, :, :] * odd[:, None, :, :]
                row_lanes += products * scale[None, :, :, None]
            else:
                for r in tl.static_range(ROWS):
                    even = tl.load(x + r * K + even_at, mask=block_ok[:, None], other=0.0).to(tl.float32)
                    odd = tl.load(x + r * K + even_at + 1, mask=block_ok[:, None], other=0.0).to(tl.float32)
                    if DEFER:
                        lanes += (high * even[None, :, :] + low * odd[None, :, :]) * scale[:, :, None]
                    else:
                        part = tl.sum(high * even[None, :, :] + low * odd[None, :, :], axis=2) * scale
                        if INVARIANT:
                            folded = tl.where(row[None, :] == r, folded + tl.sum(part, axis=1)[:, None], folded)
                        else:
                            acc = tl.where(row[None, None, :] == r, acc + part[:, :, None], acc)
        if DEFER and ROWS > 1:
            total = tl.trans(tl.sum(tl.sum(row_lanes, axis=3), axis=2))
        elif DEFER:
            total = tl.sum(tl.sum(lanes, axis=2), axis=1)[:, None] + folded
        elif INVARIANT:
            total = folded
        else:
            total = tl.sum(acc, axis=1)
        if HAS_BIAS:
            total += tl.load(bias + outputs, mask=output_ok, other=0.0).to(tl.float32)[:, None]
        store_ok = output_ok[:, None] & (row[None, :] < ROWS)
        tl.store(out + row[None, :] * N + outputs[:, None], total.to(OUT_DTYPE), mask=store_ok)


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
    """x [rows, K] (any float dtype) → [rows, N] in x's dtype; packed uint8 [N·K/2], absmax float32 [N·K/blocksize],
    code float32 [16] (quant_state.code)."""
    n, k = shape
    if k % blocksize or blocksize % 2:
        raise ValueError(f"4-bit kernel needs K ({k}) a multiple of the block size ({blocksize})")
    x = x.contiguous()
    out = torch.empty(x.shape[0], n, dtype=x.dtype, device=x.device)
    for first in range(0, x.shape[0], MAX_ROWS):
        rows = min(MAX_ROWS, x.shape[0] - first)
        chosen = tiling or tiling_for(n, rows)
        _four_bit_kernel[(triton.cdiv(n, chosen.outputs),)](
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
            BLOCK_N=chosen.outputs,
            GROUPS=chosen.blocks,
            DEFER=chosen.defer and not chosen.invariant,
            INVARIANT=chosen.invariant,
            num_warps=chosen.warps,
        )
    return out
