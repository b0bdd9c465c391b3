"""One Triton kernel for LLM.int8()'s quantisation of a layer's input rows, for the decode step.

It computes what `decode_linears.QuantizedInput` computes with torch ops: the row cast to float16; elements
with |x| ≥ threshold are outliers, left out of the row's absmax and of the int8 row; the int8 row is
round(x · (127 / absmax)), rounding half to even; the outliers are kept, in the input's dtype, in a dense row
that is zero elsewhere. Those torch ops are ~14 kernels per input, four inputs per layer: ~1,800 of the 8-bit
step's 2,702 kernels on idefics2-8b (docs/BENCHMARKS.md). This is one per input.

It also lists each row's outlier columns (ascending, with their count), so the one-row product kernel adds the
outliers' term over those columns alone after a main loop that only streams the weights; from five rows, where the
product kernels take the pieces below instead, it writes neither the list nor the dense outlier row.

From three rows on it also writes each row's outliers as integers in three int8 pieces (`PIECES`): the row's outliers
times a power of two that brings the largest to [2^19, 2^20), rounded (bf16 / fp16 outliers within 12 / 9 binades of
the largest are integers there, exactly), then split as hi · 2^14 + mid · 2^7 + lo with lo, mid in [0, 127]. The
MMA product kernel multiplies them with the int8 weights in the same MMA as the int8 rows, exactly in int32, where a
bf16 MMA beside it would convert every weight every step (1.5 of 3.8 ms a token at 8 rows on an H200).
"""

# Triton's @jit kernels take launch options (num_warps) and tl.constexpr parameters that its types do not describe.
# pyright: reportCallIssue=false, reportArgumentType=false, reportGeneralTypeIssues=false

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from . import programmatic_launch
from .triton_support import tl, triton

# Columns per span of a row (see the kernel), and so the smallest row block it takes.
SPAN = 128


if triton is not None:
    from .triton_support import start_after_previous

    @triton.jit
    def _outlier_pieces(source, outlier, row, column, ok, K, pieces, piece_scales):
        # The row's outliers as integers q = hi · 2^14 + mid · 2^7 + lo (the module docstring), and 2^F with
        # outlier = q · 2^F. From the largest outlier's float32 exponent e (biased): 2^(146 - e) brings it to
        # [2^19, 2^20), so that even rounded up |q| ≤ 2^20 and hi fits in int8, and its inverse is 2^(e - 146); a
        # row without outliers gets 0 and zero pieces.
        value = tl.where(outlier, source.to(tl.float32), 0.0)
        largest = tl.max(tl.max(tl.abs(value), axis=1), axis=0)
        e = (largest.to(tl.int32, bitcast=True) >> 23) & 255
        up = tl.where(e > 19, ((273 - e) << 23).to(tl.float32, bitcast=True), 0.0)
        down = tl.where(e > 19, ((e - 19) << 23).to(tl.float32, bitcast=True), 0.0)
        q = ((value * up + 12582912.0) - 12582912.0).to(tl.int32)
        at = pieces + row * 3 * K + column
        tl.store(at, (q >> 14).to(tl.int8), mask=ok)
        tl.store(at + K, ((q >> 7) & 127).to(tl.int8), mask=ok)
        tl.store(at + 2 * K, (q & 127).to(tl.int8), mask=ok)
        tl.store(piece_scales + row, down)

    @triton.jit
    def quantize_row(source, row, column, ok, K, quantized, stats, outliers, columns, counts, pieces, piece_scales,
                     threshold, HAS_THRESHOLD: tl.constexpr, BLOCK: tl.constexpr, SPAN: tl.constexpr,
                     PIECES: tl.constexpr, LISTS: tl.constexpr):  # fmt: skip
        # One row, held as [BLOCK / SPAN, SPAN] (`column` its columns, `ok` those below K): an outlier's place in the
        # row's list is its rank within its span (a scan within a warp) plus the outliers of the spans before (a scan
        # over BLOCK / SPAN counts). One scan over the whole row took ~7 µs a call on an H200, as long as the rest.
        half = source.to(tl.float16).to(tl.float32)
        magnitude = tl.abs(half)
        if HAS_THRESHOLD:
            outlier = magnitude >= threshold
            half = tl.where(outlier, 0.0, half)
            magnitude = tl.where(outlier, 0.0, magnitude)
        else:
            outlier = magnitude < 0.0
        if LISTS and HAS_THRESHOLD:
            tl.store(outliers + row * K + column, tl.where(outlier, source, 0.0), mask=ok)
            flagged = outlier.to(tl.int32)
            per_span = tl.sum(flagged, axis=1)
            place = (tl.cumsum(flagged, axis=1) - flagged) + (tl.cumsum(per_span, axis=0) - per_span)[:, None]
            tl.store(columns + row * K + place, column, mask=outlier & ok)
            tl.store(counts + row, tl.sum(per_span, axis=0))
        elif LISTS:
            tl.store(outliers + row * K + column, tl.zeros([BLOCK // SPAN, SPAN], dtype=source.dtype), mask=ok)
            tl.store(counts + row, 0)
        if PIECES:
            _outlier_pieces(source, outlier, row, column, ok, K, pieces, piece_scales)
        absmax = tl.max(tl.max(magnitude, axis=1), axis=0)
        tl.store(stats + row, absmax)
        # torch evaluates `127.0 / stats` as reciprocal(stats) · 127: two roundings, kept here.
        scaled = half * (tl.math.div_rn(1.0, absmax) * 127.0)
        # Adding then subtracting 1.5 · 2^23 rounds a float32 of magnitude < 2^22 to an integer, half to even,
        # as torch.round does; the quantised values lie in [-127, 127].
        rounded = (scaled + 12582912.0) - 12582912.0
        tl.store(quantized + row * K + column, rounded.to(tl.int8), mask=ok)

    @triton.jit
    def _quantize_kernel(x, quantized, stats, outliers, columns, counts, pieces, piece_scales, K, threshold,
                         HAS_THRESHOLD: tl.constexpr, BLOCK: tl.constexpr, SPAN: tl.constexpr, PIECES: tl.constexpr,
                         LISTS: tl.constexpr, PDL: tl.constexpr):  # fmt: skip
        # One program per row; the whole row is one block, so the absmax and the quantisation share one load.
        start_after_previous(PDL)
        row = tl.program_id(0)
        column = tl.arange(0, BLOCK // SPAN)[:, None] * SPAN + tl.arange(0, SPAN)[None, :]
        ok = column < K
        source = tl.load(x + row * K + column, mask=ok, other=0.0)
        quantize_row(source, row, column, ok, K, quantized, stats, outliers, columns, counts, pieces, piece_scales,
                     threshold, HAS_THRESHOLD, BLOCK, SPAN, PIECES, LISTS)  # fmt: skip


def outlier_columns(outliers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's outlier columns, what the kernel lists: int32 [n, K] whose first counts[r] entries of row r are
    its nonzero columns in ascending order (the rest unspecified), and int32 counts [n]."""
    flagged = outliers.ne(0)
    # A stable sort of "not an outlier" puts the outlier columns first, in their order.
    order = torch.sort((~flagged).to(torch.int8), dim=1, stable=True).indices
    return order.to(torch.int32), flagged.sum(dim=1, dtype=torch.int32)


class QuantizedRows(NamedTuple):
    quantized: torch.Tensor  # int8 [n, K]
    stats: torch.Tensor  # float32 [n]: each row's absmax, outliers left out
    # The outliers' lists, which the CUDA-core product kernel and the MMA without the pieces read; None where not
    # written (`writes_lists`).
    outliers: torch.Tensor | None  # [n, K] in the rows' dtype: the outliers, zero elsewhere
    columns: torch.Tensor | None  # int32 [n, K]: each row's outlier columns first (see outlier_columns)
    counts: torch.Tensor | None  # int32 [n]: how many
    # The outliers as integer pieces (the module docstring), which the MMAs read; None where not written
    # (`writes_pieces`).
    pieces: torch.Tensor | None  # int8 [n, 3, K]
    piece_scales: torch.Tensor | None  # float32 [n]: outlier = (hi · 2^14 + mid · 2^7 + lo) · piece_scale


@functools.lru_cache
def threshold_as_float16(threshold: float) -> float:
    """torch compares a float16 tensor with a Python float in float16: the threshold as float16 sees it."""
    return float(torch.tensor(threshold, dtype=torch.float16))


def writes_pieces(rows: int, row_invariant: bool = False) -> bool:
    """Whether a quantisation of this many rows writes the outliers' pieces: the MMA tilings read them, which
    `int8_gemv.tiling_for` picks from three rows on, and the row-invariant product at every row count."""
    return row_invariant or rows > 2


def writes_lists(rows: int) -> bool:
    """Whether a quantisation of this many rows writes the outliers' lists (dense row, columns, counts): the
    CUDA-core product kernel reads them, which `int8_gemv.tiling_for` picks up to four rows; from five rows on it
    picks MMAs that take the pieces. Left out there, the 8-row 8-bit step's quantisations took 0.43 ms instead of
    0.70 on an H200 (docs/BENCHMARKS.md, change 44)."""
    return rows <= 4


def empty_rows(
    n: int, k: int, dtype: torch.dtype, device: torch.device, row_invariant: bool = False, lists: bool | None = None
) -> QuantizedRows:
    """The buffers of a quantisation of n rows of width k from `dtype` values: the pieces where `writes_pieces`,
    the lists where `lists` (by default where `writes_lists`), the others None."""
    pieces = writes_pieces(n, row_invariant)
    listed = writes_lists(n) if lists is None else lists
    return QuantizedRows(
        torch.empty(n, k, dtype=torch.int8, device=device),
        torch.empty(n, dtype=torch.float32, device=device),
        torch.empty(n, k, dtype=dtype, device=device) if listed else None,
        torch.empty(n, k, dtype=torch.int32, device=device) if listed else None,
        torch.empty(n, dtype=torch.int32, device=device) if listed else None,
        torch.empty(n, 3, k, dtype=torch.int8, device=device) if pieces else None,
        torch.empty(n, dtype=torch.float32, device=device) if pieces else None,
    )


def kernel_buffers(out: QuantizedRows) -> tuple[list[torch.Tensor], dict[str, bool]]:
    """What a quantising kernel takes: every buffer (the int8 rows in place of one not written, which the kernel
    does not touch) and its PIECES / LISTS flags."""
    buffers = [out.quantized if buffer is None else buffer for buffer in out]
    return buffers, {"PIECES": out.pieces is not None, "LISTS": out.columns is not None}


def row_block(k: int) -> int:
    """A row's block: its width, to a power of two and at least one span."""
    return int(max(SPAN, triton.next_power_of_2(k)))


def quantize_warps(k: int) -> int:
    """Warps of a program quantising a row of width k: one per 512 columns of its block, up to 32. At 1-8 rows a
    launch is a program a row, so its time is one program's over its row: on an H200 (H30, `tune_quantize.py`) 8 warps
    for 4,096 columns and 32 for 14,336 took 2.8 and 6.6 us at one row where one per 1,024 columns (4 and 16) took
    3.1 and 7.1, and tied or came within 0.2 us of the best at 8 rows."""
    return min(32, max(1, row_block(k) // 512))


def quantize_rows(
    rows: torch.Tensor,
    threshold: float,
    row_invariant: bool = False,
    lists: bool | None = None,
    warps: int | None = None,
) -> QuantizedRows:
    """LLM.int8()'s quantisation of rows [n, K] (any float dtype); threshold 0 means no outliers. `row_invariant`:
    for the row-invariant product (`writes_pieces`). `lists`: whether to write the outliers' lists (by default
    where a tiling reads them, `writes_lists`). `warps`: per row's program (`quantize_warps` by default)."""
    rows = rows.contiguous()
    n, k = rows.shape
    out = empty_rows(n, k, rows.dtype, rows.device, row_invariant, lists)
    buffers, written = kernel_buffers(out)
    block = row_block(k)
    _quantize_kernel[(n,)](
        rows,
        *buffers,
        k,
        threshold_as_float16(threshold),
        HAS_THRESHOLD=threshold > 0.0,
        BLOCK=block,
        SPAN=SPAN,
        num_warps=warps or quantize_warps(k),
        **written,
        **programmatic_launch.triton_options(rows.device),
    )
    return out
