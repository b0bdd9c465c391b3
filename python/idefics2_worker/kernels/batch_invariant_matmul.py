"""A batch-invariant Triton matmul for the decode step's bf16 / fp16 / fp32 linears (projections, MLP, lm_head).

cuBLAS chooses its algorithm, tile and split-K for each problem shape, so one row of `x @ W.T` can come out
differently at 1, 3 or 8 rows: the sums are added in another order. Here every choice that orders the sums
depends on the weight's shape (N, K) alone, never on the number of rows M (`tiling_for`): a fixed tile, a fixed
step along K, and a fixed number of K splits whose float32 partial sums are added in split order by a second
kernel. Each output element is then the same sequence of float32 operations whatever the other rows hold or how
many there are (the approach of Thinking Machines' "Defeating nondeterminism in LLM inference", 2025, and of
vLLM's / SGLang's batch-invariant modes). The result is rounded to the input's dtype once, as torch's linear does.
"""

# Triton's @jit kernels take launch options (num_warps) and tl.constexpr parameters that its types do not describe.
# pyright: reportCallIssue=false, reportArgumentType=false, reportGeneralTypeIssues=false

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from . import programmatic_launch, triton_support
from .triton_support import tl, tl_dtype, triton


@dataclass(frozen=True)
class Tiling:
    """Rows and outputs per program, step along K, splits of K (summed in order), warps and pipeline stages."""

    rows: int = 16
    outputs: int = 32
    step: int = 128
    splits: int = 1
    warps: int = 4
    stages: int = 4


# Programs to aim for: about two per streaming multiprocessor of an H100 / H200 (132), so a layer narrow in N
# (idefics2-8b's k / v projections: 1,024 outputs) still reads its weights from every SM.
TARGET_PROGRAMS = 256
MAX_SPLITS = 16


def tiling_for(n: int, k: int) -> Tiling:
    """The tiling for a weight of shape [n, k]: a function of the weight alone, which is what makes rows invariant."""
    base = Tiling()
    tiles = triton.cdiv(n, base.outputs)
    splits = 1
    # Each split keeps at least four steps along K so the pipeline has something to overlap.
    while tiles * splits < TARGET_PROGRAMS and splits < MAX_SPLITS and k // (2 * splits) >= 4 * base.step:
        splits *= 2
    # Three stages where K is not split: those shapes, whose programs outnumber the SMs several times, took 15-22% less
    # time than at four (gate/up 72.6 -> 56.8 us at one row, the lm_head 74.4 -> 63.1: H65,
    # tune_batch_invariant_matmul.py); the split ones were within 3% either way. Stages do not order the sums.
    return Tiling(splits=splits, stages=3 if splits == 1 else Tiling.stages)


# The lm_head's (32,003 outputs of 4,096, in every decode step): 64 outputs a program and 3 stages read its weight at
# the card's copy bandwidth, 61.5 us at 1 and at 8 rows on an H200, where 32 outputs and 4 stages took 90 and 75 and
# cuBLAS 93 and 243 (H64, scripts/gpu/tune_batch_invariant_matmul.py). `tiling_for`'s 32 outputs at 3 stages came
# 1 us behind (63.1 against 62.1 at one row, H65); this is the tiling the end-to-end runs measured.
HEAD_TILING = Tiling(outputs=64, stages=3)


# How a kernel's tl.dot runs (`dot`): natively (bf16 / fp16 operands on the tensor cores), in IEEE float32 (float32
# operands, where TF32 would round them), or as a broadcast product and sum (Triton's CPU interpreter, whose dot
# multiplies 16-bit operands as their raw bits and, through BLAS, may sum a row differently by its place in the tile).
DOT_NATIVE, DOT_IEEE, DOT_ELEMENTWISE = 0, 1, 2


def dot_mode(dtype: torch.dtype) -> int:
    if triton_support.INTERPRETED:
        return DOT_ELEMENTWISE
    return DOT_IEEE if dtype == torch.float32 else DOT_NATIVE


if triton is not None:
    from .triton_support import let_next_start, start_after_previous

    @triton.jit
    def dot(a, b, acc, MODE: tl.constexpr):
        """acc + a @ b in float32, as `dot_mode` chose."""
        if MODE == 2:
            out = acc + tl.sum(a.to(tl.float32)[:, :, None] * b.to(tl.float32)[None, :, :], axis=1)
        elif MODE == 1:
            out = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
        else:
            out = tl.dot(a, b, acc)
        return out

    # M is not specialised on (Triton compiles other variants for M == 1 or M % 16 == 0): one compiled kernel for
    # every row count, so no row count can change the code that orders the sums.
    @triton.jit(do_not_specialize=["M"])
    def _matmul_kernel(x, weight, bias, out, partial, M, N, K, PER_SPLIT: tl.constexpr, HAS_BIAS: tl.constexpr,
                       SPLIT: tl.constexpr, DOT: tl.constexpr, OUT_DTYPE: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       WEIGHTS_FIRST: tl.constexpr, PDL: tl.constexpr):  # fmt: skip
        # Program (outputs tile, rows tile, split): x[rows, K-range] @ weight[outputs, K-range].T in float32.
        # WEIGHTS_FIRST: the first block of weights, which nothing writes during the step, is read before the wait
        # (programmatic_launch.WEIGHTS_FIRST); the blocks are added in the same order either way.
        outputs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        output_ok = outputs < N
        column = tl.arange(0, BLOCK_K)
        split = tl.program_id(2)
        first = split * PER_SPLIT
        first_ok = output_ok[None, :] & (first + column < K)[:, None]
        b = tl.zeros([BLOCK_K, BLOCK_N], dtype=weight.dtype.element_ty)
        if WEIGHTS_FIRST:
            b = tl.load(weight + outputs[None, :] * K + (first + column)[:, None], mask=first_ok, other=0.0)
        start_after_previous(PDL)
        if not WEIGHTS_FIRST:
            b = tl.load(weight + outputs[None, :] * K + (first + column)[:, None], mask=first_ok, other=0.0)
        rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < M
        col = first + column
        a = tl.load(x + rows[:, None] * K + col[None, :], mask=row_ok[:, None] & (col < K)[None, :], other=0.0)
        acc = dot(a, b, tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), DOT)
        for start in range(BLOCK_K, PER_SPLIT, BLOCK_K):
            col = first + start + column
            col_ok = col < K
            a = tl.load(x + rows[:, None] * K + col[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0)
            b = tl.load(weight + outputs[None, :] * K + col[:, None], mask=output_ok[None, :] & col_ok[:, None],
                        other=0.0)  # fmt: skip
            acc = dot(a, b, acc, DOT)
        let_next_start(PDL)
        store_ok = row_ok[:, None] & output_ok[None, :]
        if SPLIT:
            tl.store(partial + (split * M + rows[:, None]) * N + outputs[None, :], acc, mask=store_ok)
        else:
            if HAS_BIAS:
                acc += tl.load(bias + outputs, mask=output_ok, other=0.0).to(tl.float32)[None, :]
            tl.store(out + rows[:, None] * N + outputs[None, :], acc.to(OUT_DTYPE), mask=store_ok)

    @triton.jit
    def _sum_splits_kernel(partial, bias, out, COUNT, N, SPLITS: tl.constexpr, HAS_BIAS: tl.constexpr,
                           OUT_DTYPE: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr):  # fmt: skip
        # The splits' partial sums added in split order (a fixed order), the bias, one rounding.
        start_after_previous(PDL)
        index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = index < COUNT
        total = tl.load(partial + index, mask=ok, other=0.0)
        for split in tl.static_range(1, SPLITS):
            total += tl.load(partial + split * COUNT + index, mask=ok, other=0.0)
        if HAS_BIAS:
            total += tl.load(bias + index % N, mask=ok, other=0.0).to(tl.float32)
        tl.store(out + index, total.to(OUT_DTYPE), mask=ok)


class SplitSums(NamedTuple):
    """A split product not yet summed (`split_linear`): its float32 partial sums [splits, rows, N], to be added in split
    order with the bias and rounded once to `dtype`, by `summed` or by a kernel that reads them itself
    (`step_kernels.add_rms_norm`)."""

    partial: torch.Tensor
    bias: torch.Tensor | None
    dtype: torch.dtype
    shape: tuple[int, ...]  # the product's


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, tiling: Tiling | None = None
) -> torch.Tensor:
    """`torch.nn.functional.linear(x, weight, bias)` for x [..., K] and weight [N, K] of one float dtype, each row's
    result independent of the other rows; out in x's dtype."""
    product = split_linear(x, weight, bias, tiling)
    return product if isinstance(product, torch.Tensor) else summed(product)


def split_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, tiling: Tiling | None = None
) -> torch.Tensor | SplitSums:
    """`linear`, where K is split left as its partial sums (`SplitSums`) for the caller's kernel to add."""
    if x.dtype != weight.dtype:
        raise TypeError(f"batch-invariant linear needs x and weight of one dtype, got {x.dtype} and {weight.dtype}")
    n, k = weight.shape
    rows = x.reshape(-1, k).contiguous()
    weight = weight.contiguous()
    m = rows.shape[0]
    chosen = tiling or tiling_for(n, k)
    per_split = triton.cdiv(triton.cdiv(k, chosen.splits), chosen.step) * chosen.step
    splits = triton.cdiv(k, per_split)
    out = torch.empty(m, n, dtype=x.dtype, device=x.device) if splits == 1 else None
    partial = torch.empty(splits, m, n, dtype=torch.float32, device=x.device) if out is None else out
    grid = (triton.cdiv(n, chosen.outputs), triton.cdiv(m, chosen.rows), splits)
    _matmul_kernel[grid](
        rows,
        weight,
        bias if bias is not None else weight,
        partial if out is None else out,
        partial,
        m,
        n,
        k,
        per_split,
        HAS_BIAS=bias is not None,
        SPLIT=out is None,
        DOT=dot_mode(x.dtype),
        OUT_DTYPE=tl_dtype(x.dtype),
        BLOCK_M=chosen.rows,
        BLOCK_N=chosen.outputs,
        BLOCK_K=chosen.step,
        WEIGHTS_FIRST=programmatic_launch.WEIGHTS_FIRST,
        num_warps=chosen.warps,
        num_stages=chosen.stages,
        **programmatic_launch.triton_options(x.device),
    )
    if out is None:
        return SplitSums(partial, bias, x.dtype, (*x.shape[:-1], n))
    return out.reshape(*x.shape[:-1], n)


def summed(sums: SplitSums) -> torch.Tensor:
    """The split product's partial sums added in split order, with the bias, rounded once (`_sum_splits_kernel`)."""
    splits, m, n = sums.partial.shape
    out = torch.empty(m, n, dtype=sums.dtype, device=sums.partial.device)
    block = 1024
    _sum_splits_kernel[(triton.cdiv(m * n, block),)](
        sums.partial,
        sums.bias if sums.bias is not None else sums.partial,
        out,
        m * n,
        n,
        SPLITS=splits,
        HAS_BIAS=sums.bias is not None,
        OUT_DTYPE=tl_dtype(sums.dtype),
        BLOCK=block,
        **programmatic_launch.triton_options(out.device),
    )
    return out.reshape(sums.shape)
