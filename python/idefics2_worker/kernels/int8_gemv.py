"""Triton kernels for bitsandbytes' LLM.int8() product at a few rows, for the decode step.

They compute what bitsandbytes computes for a batch of one per row: the int8 product of the quantised input and
weight, summed exactly in int32, scaled by the row and column absmax / 127² and rounded to float16 (bitsandbytes'
dequant kernel), then the outlier columns' product with the dequantised weight added in float32. Only the order
of float32 additions in the outlier term differs. bitsandbytes' own forward cannot be captured in a CUDA graph
and, at batch 1, spends ~250-650 µs per layer; the one-row kernel takes 4-19 µs on an H200 (docs/BENCHMARKS.md).

At one row the multiply-adds run on the CUDA cores, four per dp4a instruction (`_eight_bit_kernel`). For several
rows the CUDA-core kernel keeps each lane's sums per row, so its dp4a count grows with the rows and its weight reads
do not: at two rows it beats the MMA kernel on every layer of the 8B model (on an H200, 2.71 against 3.80 ms a
token), at three or four on the narrow ones. Beyond, `tiling_for` picks `_eight_bit_mma_kernel`: int8 tensor-core
MMAs, exact in int32 in any order, and the outlier term as a bf16 / fp16 MMA whose products are exact in float32, or,
with `Tiling.pieces`, as the outliers' int8 pieces (int8_quantize) inside the int8 MMA itself: exact, and without
converting every weight every step. `Tiling.splits` splits K for that form over several programs
(`_split_pieces_kernel`, then `_combine_splits_kernel` adds their int32 sums: the same bits), so the narrower layers
take wide programs that read the operand rows once per 128 outputs and still fill the GPU.

Row-invariant (`row_invariant=True`, deterministic decoding): every kernel computes the outlier term exactly, from
the outliers' int8 pieces, and rounds it once: the MMA kernels as above, the CUDA-core kernel over each row's listed
outlier columns in int64. The int32 and int64 sums are exact in any order, so a row gets the same bits from any
kernel, alone or beside others, and one row keeps the fast one-row kernel.
"""

# Triton's @jit kernels take launch options (num_warps) and tl.constexpr parameters that its types do not describe.
# pyright: reportCallIssue=false, reportArgumentType=false, reportGeneralTypeIssues=false

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import programmatic_launch, triton_support
from .triton_support import MAX_ROWS, tl, tl_dtype, triton


@dataclass(frozen=True)
class Tiling:
    """Outputs per program, weights per step along K (a power of two, at least 4), warps per program, whether the
    rows' multiply-adds run as tensor-core MMAs (all rows of a launch at once, padded to 16), and the loop's
    pipeline stages (Triton's default on sm_80 / sm_90 is 3), and whether an MMA takes the outliers as int8 pieces
    (when the caller has them) rather than as a bf16 MMA beside it."""

    outputs: int = 8
    columns: int = 1024
    warps: int = 4
    mma: bool = False
    stages: int = 3
    pieces: bool = False
    # With the pieces only: K split over this many programs per block of outputs, their int32 sums (exact in any
    # order) added by a second kernel, so wide programs still fill the GPU on narrow layers.
    splits: int = 1


MMA_TILING = Tiling(outputs=32, columns=256, warps=4, mma=True)
MMA_ROWS = 16  # rows per MMA launch: the smallest MMA shape Triton emits
PIECE_COLUMNS = 32  # with the outliers in pieces: 8 rows' int8 products and their outliers' three pieces each
COMBINE_OUTPUTS = 64  # outputs a program of the split pieces' second kernel

# bitsandbytes' own dequantisation constants, written as bitsandbytes writes them so results match to the bit:
# int8_mm_dequant's scale (bitsandbytes/backends/default/ops.py), a literal that is NOT 1/127² (6.2000124e-05);
# and int8_vectorwise_dequant's 1/127 (bitsandbytes/_ops.py).
MM_DEQUANT_SCALE = 6.200124e-05
VECTORWISE_DEQUANT_SCALE = 7.874015718698502e-3


def tiling_for(outputs: int, inputs: int, rows: int, pieces: bool = False) -> Tiling:
    """The fastest tilings measured at idefics2-8b's shapes on an H200 (scripts/gpu/tune_decode_kernels.py,
    scripts/gpu/int8_outlier_cost.py). `pieces`: whether the caller passes the outliers as int8 pieces
    (int8_quantize.writes_pieces); without them (a caller that has none) an MMA adds the outliers as a bf16 MMA.

    One row on the CUDA cores: 8 outputs a program in 512-column steps with 2 warps, but 4 outputs in 2,048-column
    steps with 4 warps for the long rows of `down` (14,336 inputs). Two rows on the CUDA cores too, whose dp4a
    count grows with the rows: 4 outputs in 128-column steps with 4 warps, the fused gate/up (28,672 outputs) 16 in
    256 with 2. Three or four rows: the narrow layers (q/k/v, o) on the CUDA cores, 8 outputs in 512-column steps
    with 2 warps. Everything else as MMAs, whose time hardly moves with the rows. With the pieces, 128-output
    programs in 128-column steps (the 32 operand rows re-read once per 128 outputs), K split over programs where
    the layer is too narrow to fill the GPU otherwise: 8 ways for `down` (24.5 against 40.0 µs at 8 rows, the
    bf16 outlier MMA) and q/k/v (12.2 against 16.5), 4 ways with 64 outputs for o (10.4 against 13.9); gate/up
    unsplit (34.7; split 43.1); layers narrower than idefics2-8b's, 16 or 32 outputs in 256-column steps. So with
    the pieces, from five rows every choice is an MMA that takes them (int8_quantize.writes_lists). Without the
    pieces: gate/up 128 outputs a program in 128-column steps, q/k/v (6,144) 64, o and down (4,096) 32 in 256-column
    steps."""
    if rows == 1:
        return Tiling(outputs=4, columns=2048, warps=4) if inputs >= 8192 else Tiling(outputs=8, columns=512, warps=2)
    if rows == 2:
        return Tiling(outputs=16, columns=256, warps=2) if outputs >= 16384 else Tiling(outputs=4, columns=128, warps=4)
    if pieces and inputs >= 8192:
        return Tiling(outputs=128, columns=128, mma=True, pieces=True, splits=8)
    if rows <= 4 and outputs < 16384 and inputs < 8192:
        return Tiling(outputs=8, columns=512, warps=2)
    if outputs >= 16384:
        return Tiling(outputs=128, columns=128, mma=True, pieces=pieces)
    if pieces and outputs > 4096:
        return Tiling(outputs=128, columns=128, mma=True, pieces=True, splits=8)
    if pieces and outputs >= 2048:
        return Tiling(outputs=64, columns=128, mma=True, pieces=True, splits=4)
    if outputs > 4096:
        return Tiling(outputs=64, columns=128, mma=True)
    per_program = 16 if outputs < 2048 else MMA_TILING.outputs
    return Tiling(outputs=per_program, columns=MMA_TILING.columns, mma=True, pieces=pieces)


if triton is not None:
    from .triton_support import start_after_previous

    # A jit function reads module globals only as constexpr.
    _MM_DEQUANT = tl.constexpr(MM_DEQUANT_SCALE)
    _VECTORWISE_DEQUANT = tl.constexpr(VECTORWISE_DEQUANT_SCALE)
    PIECE_COLUMNS_ = tl.constexpr(PIECE_COLUMNS)

    @triton.jit
    def _scaled(
        exact, extra, row_absmax, weight_absmax, out, outputs, output_ok, row, ROWS, N, OUT_DTYPE: tl.constexpr
    ):
        # bitsandbytes' int8 dequantisation: absmax_row · absmax_col / 127², rounded to float16, then the
        # outliers' product (in units of the weight's absmax / 127) added in float32.
        column_scale = tl.load(weight_absmax + outputs, mask=output_ok, other=0.0)[:, None]
        row_scale = tl.load(row_absmax + row, mask=row < ROWS, other=0.0)[None, :]
        main = (exact.to(tl.float32) * (row_scale * column_scale) * _MM_DEQUANT).to(tl.float16)
        result = main.to(OUT_DTYPE).to(tl.float32) + extra * column_scale * _VECTORWISE_DEQUANT
        store_ok = output_ok[:, None] & (row[None, :] < ROWS)
        tl.store(out + row[None, :] * N + outputs[:, None], result.to(OUT_DTYPE), mask=store_ok)

    @triton.jit
    def _dot4(w, a, acc, DP4A: tl.constexpr):
        # acc + the four int8 products of each pair of int32 words (byte i of a word is column 4·word + i): exact in
        # int32 in any order. On the GPU one dp4a instruction; the interpreter has no inline assembly, so there the
        # bytes are sign-extended by shifts.
        if DP4A:
            acc = tl.inline_asm_elementwise(
                "dp4a.s32.s32 $0, $1, $2, $3;", "=r,r,r,r", [w, a, acc], dtype=tl.int32, is_pure=True, pack=1
            )
        else:
            for shift in tl.static_range(0, 32, 8):
                acc += ((w << (24 - shift)) >> 24) * ((a << (24 - shift)) >> 24)
        return acc

    @triton.jit
    def _add_words(quantized, w, at, row, lanes, WORDS: tl.constexpr, ROWS: tl.constexpr, ROWS_P2: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr, DP4A: tl.constexpr):  # fmt: skip
        # One block of words into the lanes' sums: the rows' words `at` times the weights' block `w`.
        at_ok = at < WORDS
        if ROWS == 1:
            a = tl.load(quantized + at, mask=at_ok, other=0)
            lanes = _dot4(w, tl.broadcast_to(a[None, :], [BLOCK_N, BLOCK_W]), lanes, DP4A)
        else:
            a_ok = (row[:, None] < ROWS) & at_ok[None, :]
            a = tl.load(quantized + row[:, None] * WORDS + at[None, :], mask=a_ok, other=0)
            every_row = tl.broadcast_to(w[None, :, :], [ROWS_P2, BLOCK_N, BLOCK_W])
            lanes = _dot4(every_row, tl.broadcast_to(a[:, None, :], [ROWS_P2, BLOCK_N, BLOCK_W]), lanes, DP4A)
        return lanes

    @triton.jit
    def _eight_bit_kernel(quantized, outliers, columns, counts, pieces, piece_scales, weight, weight_bytes, row_absmax,
                          weight_absmax, out, N, K: tl.constexpr, ROWS: tl.constexpr, ROWS_P2: tl.constexpr,
                          OUT_DTYPE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DP4A: tl.constexpr,
                          EXACT_OUTLIERS: tl.constexpr, WEIGHTS_FIRST: tl.constexpr,
                          PDL: tl.constexpr):  # fmt: skip
        # Program: BLOCK_N outputs of every input row; each weight block is read once and used for all rows. The
        # int8 inputs and weights come as int32 words of four ([rows, K / 4], [N, K / 4]), one dp4a per word. Each
        # lane keeps its own sums until the end (one reduction per program, not one per step); several rows keep
        # [rows, outputs, words] of them, so the tiling must keep ROWS_P2 · BLOCK_N · BLOCK_W within registers.
        # The main loop only streams the weights: nothing in it waits on the data. The outliers' term follows,
        # over each row's listed outlier columns (their weights were just read, so they come from cache). Every
        # row's bits are the one-row kernel's: the int32 sums are exact in any order, the outlier chain is per row.
        # EXACT_OUTLIERS: that term from the outliers' pieces, summed exactly in int64 and rounded once, as the MMA
        # kernels round it (`_split_slots`), so that a row's bits are also theirs.
        # WEIGHTS_FIRST: the first block of weights, which nothing writes during the step, is read before the wait
        # (programmatic_launch.WEIGHTS_FIRST).
        WORDS: tl.constexpr = K // 4
        BLOCK_W: tl.constexpr = BLOCK_K // 4
        outputs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        output_ok = outputs < N
        word = tl.arange(0, BLOCK_W)
        first_ok = output_ok[:, None] & (word < WORDS)[None, :]
        block = tl.zeros([BLOCK_N, BLOCK_W], dtype=tl.int32)
        if WEIGHTS_FIRST:
            block = tl.load(weight + outputs[:, None] * WORDS + word[None, :], mask=first_ok, other=0)
        start_after_previous(PDL)
        if not WEIGHTS_FIRST:
            block = tl.load(weight + outputs[:, None] * WORDS + word[None, :], mask=first_ok, other=0)
        row = tl.arange(0, ROWS_P2)
        extra = tl.zeros([BLOCK_N, ROWS_P2], dtype=tl.float32)
        if ROWS == 1:
            lanes = tl.zeros([BLOCK_N, BLOCK_W], dtype=tl.int32)
        else:
            lanes = tl.zeros([ROWS_P2, BLOCK_N, BLOCK_W], dtype=tl.int32)
        lanes = _add_words(quantized, block, word, row, lanes, WORDS, ROWS, ROWS_P2, BLOCK_N, BLOCK_W, DP4A)
        for start in range(BLOCK_W, WORDS, BLOCK_W):
            at = start + word
            w_ok = output_ok[:, None] & (at < WORDS)[None, :]
            block = tl.load(weight + outputs[:, None] * WORDS + at[None, :], mask=w_ok, other=0)
            lanes = _add_words(quantized, block, at, row, lanes, WORDS, ROWS, ROWS_P2, BLOCK_N, BLOCK_W, DP4A)
        exact = tl.sum(lanes, axis=1)[:, None] if ROWS == 1 else tl.trans(tl.sum(lanes, axis=2))
        for r in tl.static_range(ROWS):
            more = tl.zeros([BLOCK_N], dtype=tl.float32)
            whole = tl.zeros([BLOCK_N], dtype=tl.int64)
            count = tl.load(counts + r)
            i = 0
            while i < count:  # a while loop: Triton's interpreter cannot range over a loaded bound
                column = tl.load(columns + r * K + i)
                w = tl.load(weight_bytes + outputs * K + column, mask=output_ok, other=0)
                if EXACT_OUTLIERS:
                    at = pieces + r * 3 * K + column
                    value = tl.load(at).to(tl.int64) * 16384 + tl.load(at + K).to(tl.int64) * 128 + tl.load(at + 2 * K)
                    whole += w.to(tl.int64) * value
                else:
                    more = tl.fma(w.to(tl.float32), tl.load(outliers + r * K + column).to(tl.float32), more)
                i += 1
            if EXACT_OUTLIERS:
                more = whole.to(tl.float32) * tl.load(piece_scales + r)
            extra = tl.where(row[None, :] == r, extra + more[:, None], extra)
        _scaled(exact, extra, row_absmax, weight_absmax, out, outputs, output_ok, row, ROWS, N, OUT_DTYPE)

    @triton.jit
    def _rows_and_pieces(quantized, pieces, row, col, col_ok, ROWS, K: tl.constexpr):
        # The MMA's [32, columns] operand: row r's int8 input at r (slot 0), its outliers' pieces hi / mid / lo at
        # slot · 8 + r (slots 1-3).
        slot = row // 8
        of_row = row % 8
        main_ok = ((slot == 0) & (of_row < ROWS))[:, None] & col_ok[None, :]
        piece_ok = ((slot > 0) & (of_row < ROWS))[:, None] & col_ok[None, :]
        a = tl.load(quantized + of_row[:, None] * K + col[None, :], mask=main_ok, other=0)
        return a + tl.load(pieces + (of_row * 3 + slot - 1)[:, None] * K + col[None, :], mask=piece_ok, other=0)

    @triton.jit
    def _split_slots(exact, piece_scales, ROWS, BLOCK_N: tl.constexpr):
        # From the [outputs, 32] int32 sums: each row's int8 product (slot 0), and its outliers' term, the pieces'
        # sums combined as hi · 2^14 + mid · 2^7 + lo exactly in int64, rounded once to float32 and scaled back.
        by_slot = tl.reshape(exact, [BLOCK_N, 4, 8])
        slots = tl.arange(0, 4)
        main = tl.sum(tl.where(slots[None, :, None] == 0, by_slot, 0), axis=1)
        weight_of_slot = tl.where(slots == 1, 16384, tl.where(slots == 2, 128, tl.where(slots == 3, 1, 0)))
        q = tl.sum(by_slot.to(tl.int64) * weight_of_slot.to(tl.int64)[None, :, None], axis=1)
        rows8 = tl.arange(0, 8)
        piece_scale = tl.load(piece_scales + rows8, mask=rows8 < ROWS, other=0.0)
        return main, q.to(tl.float32) * piece_scale[None, :], rows8

    @triton.jit
    def _split_pieces_kernel(quantized, pieces, weight, partials, N, ROWS, K: tl.constexpr, SPLIT: tl.constexpr,
                             BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, WEIGHTS_FIRST: tl.constexpr,
                             PDL: tl.constexpr):  # fmt: skip
        # The pieces' MMA over one split of K (SPLIT columns, a multiple of BLOCK_K): [outputs, 32] int32 sums of
        # the rows' int8 inputs and outliers' pieces, stored for `_combine_splits_kernel`.
        outputs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        output_ok = outputs < N
        column = tl.arange(0, BLOCK_K)
        begin = tl.program_id(1) * SPLIT
        first_ok = output_ok[:, None] & (begin + column < K)[None, :]
        w = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.int8)
        if WEIGHTS_FIRST:  # as in `_eight_bit_kernel`
            w = tl.load(weight + outputs[:, None] * K + (begin + column)[None, :], mask=first_ok, other=0)
        start_after_previous(PDL)
        if not WEIGHTS_FIRST:
            w = tl.load(weight + outputs[:, None] * K + (begin + column)[None, :], mask=first_ok, other=0)
        row = tl.arange(0, PIECE_COLUMNS_)
        exact = tl.zeros([BLOCK_N, PIECE_COLUMNS_], dtype=tl.int32)
        col = begin + column
        exact = tl.dot(w, tl.trans(_rows_and_pieces(quantized, pieces, row, col, col < K, ROWS, K)), exact,
                       out_dtype=tl.int32)  # fmt: skip
        for offset in range(BLOCK_K, SPLIT, BLOCK_K):
            col = begin + offset + column
            col_ok = col < K
            w = tl.load(
                weight + outputs[:, None] * K + col[None, :], mask=output_ok[:, None] & col_ok[None, :], other=0
            )
            exact = tl.dot(w, tl.trans(_rows_and_pieces(quantized, pieces, row, col, col_ok, ROWS, K)), exact,
                           out_dtype=tl.int32)  # fmt: skip
        at = tl.program_id(1) * N * PIECE_COLUMNS_ + outputs[:, None] * PIECE_COLUMNS_ + row[None, :]
        tl.store(partials + at, exact, mask=output_ok[:, None])

    @triton.jit
    def _combine_splits_kernel(partials, piece_scales, row_absmax, weight_absmax, out, N, ROWS,
                               SPLITS: tl.constexpr, BLOCK_N: tl.constexpr, OUT_DTYPE: tl.constexpr,
                               PDL: tl.constexpr):  # fmt: skip
        # The splits' int32 sums added (exact, so the bits are the unsplit kernel's), then its epilogue.
        start_after_previous(PDL)
        outputs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        output_ok = outputs < N
        at = outputs[:, None] * PIECE_COLUMNS_ + tl.arange(0, PIECE_COLUMNS_)[None, :]
        exact = tl.zeros([BLOCK_N, PIECE_COLUMNS_], dtype=tl.int32)
        for split in tl.static_range(SPLITS):
            exact += tl.load(partials + split * N * PIECE_COLUMNS_ + at, mask=output_ok[:, None], other=0)
        main, outlier_sums, rows8 = _split_slots(exact, piece_scales, ROWS, BLOCK_N)
        _scaled(main, outlier_sums, row_absmax, weight_absmax, out, outputs, output_ok, rows8, ROWS, N, OUT_DTYPE)

    @triton.jit
    def _mma_block(quantized, outliers, pieces, w, row, col, exact, extra, ROWS, K: tl.constexpr,
                   OUT_DTYPE: tl.constexpr, SIXTEEN_BIT_DOT: tl.constexpr, PIECES: tl.constexpr):  # fmt: skip
        # One block of columns `col` into `_eight_bit_mma_kernel`'s sums, from its weights `w`.
        col_ok = col < K
        if PIECES:
            exact = tl.dot(w, tl.trans(_rows_and_pieces(quantized, pieces, row, col, col_ok, ROWS, K)), exact,
                           out_dtype=tl.int32)  # fmt: skip
        else:
            at = row[:, None] * K + col[None, :]
            rows_ok = (row < ROWS)[:, None] & col_ok[None, :]
            a = tl.load(quantized + at, mask=rows_ok, other=0)
            exact = tl.dot(w, tl.trans(a), exact, out_dtype=tl.int32)
            o = tl.trans(tl.load(outliers + at, mask=rows_ok, other=0.0))
            if SIXTEEN_BIT_DOT:
                # The outliers are the layer's bf16 / fp16 inputs and |w| ≤ 127: both exact in that dtype, so each
                # product is exact in the MMA's float32 accumulator.
                extra = tl.dot(w.to(OUT_DTYPE), o.to(OUT_DTYPE), extra)
            else:
                extra = tl.dot(w.to(tl.float32), o.to(tl.float32), extra, input_precision="ieee")
        return exact, extra

    @triton.jit
    def _eight_bit_mma_kernel(quantized, outliers, pieces, piece_scales, weight, row_absmax,
                              weight_absmax, out, N, ROWS, K: tl.constexpr, OUT_DTYPE: tl.constexpr,
                              BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ROWS_MMA: tl.constexpr,
                              SIXTEEN_BIT_DOT: tl.constexpr, PIECES: tl.constexpr, WEIGHTS_FIRST: tl.constexpr,
                              PDL: tl.constexpr):  # fmt: skip
        # Program: BLOCK_N outputs of up to ROWS_MMA rows: [BLOCK_N, BLOCK_K] int8 weights times the rows'
        # [BLOCK_K, ROWS_MMA] int8 inputs on the tensor cores, exact in int32, and the same weights times the
        # rows' outliers in another MMA. Every block takes both: nothing depends on the data, so Triton pipelines
        # the loop's loads (skipping blocks without outliers, as at one row, measured slower: the 8B-shaped
        # model's outliers are scattered, and a branch stops the pipelining).
        # PIECES (up to 8 rows, ROWS_MMA 32): the MMA's columns 8-31 are the rows' outliers as int8 pieces
        # (int8_quantize), so one int8 MMA computes both terms exactly and no weight is converted.
        # WEIGHTS_FIRST: as in `_eight_bit_kernel`.
        outputs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        output_ok = outputs < N
        column = tl.arange(0, BLOCK_K)
        first_ok = output_ok[:, None] & (column < K)[None, :]
        w = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.int8)
        if WEIGHTS_FIRST:  # as in `_eight_bit_kernel`
            w = tl.load(weight + outputs[:, None] * K + column[None, :], mask=first_ok, other=0)
        start_after_previous(PDL)
        if not WEIGHTS_FIRST:
            w = tl.load(weight + outputs[:, None] * K + column[None, :], mask=first_ok, other=0)
        row = tl.arange(0, ROWS_MMA)
        exact = tl.zeros([BLOCK_N, ROWS_MMA], dtype=tl.int32)
        extra = tl.zeros([BLOCK_N, ROWS_MMA], dtype=tl.float32)
        exact, extra = _mma_block(quantized, outliers, pieces, w, row, column, exact, extra, ROWS, K, OUT_DTYPE,
                                  SIXTEEN_BIT_DOT, PIECES)  # fmt: skip
        for start in range(BLOCK_K, K, BLOCK_K):
            col = start + column
            w_ok = output_ok[:, None] & (col < K)[None, :]
            w = tl.load(weight + outputs[:, None] * K + col[None, :], mask=w_ok, other=0)
            exact, extra = _mma_block(quantized, outliers, pieces, w, row, col, exact, extra, ROWS, K, OUT_DTYPE,
                                      SIXTEEN_BIT_DOT, PIECES)  # fmt: skip
        if PIECES:
            main, outlier_sums, rows8 = _split_slots(exact, piece_scales, ROWS, BLOCK_N)
            _scaled(main, outlier_sums, row_absmax, weight_absmax, out, outputs, output_ok, rows8, ROWS, N, OUT_DTYPE)
        else:
            _scaled(exact, extra, row_absmax, weight_absmax, out, outputs, output_ok, row, ROWS, N, OUT_DTYPE)


def eight_bit_gemv(
    quantized: torch.Tensor,
    outliers: torch.Tensor | None,
    columns: torch.Tensor | None,
    counts: torch.Tensor | None,
    weight: torch.Tensor,
    row_absmax: torch.Tensor,
    weight_absmax: torch.Tensor,
    dtype: torch.dtype,
    tiling: Tiling | None = None,
    row_invariant: bool = False,
    pieces: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """quantized int8 [rows, K], outliers [rows, K] in float32 or dtype (zero off the outlier columns) and their
    columns and counts (int8_quantize.outlier_columns; the one-row kernel reads only those) → dtype [rows, N].
    `pieces`: the outliers as int8 pieces and their scales (int8_quantize.QuantizedRows), which an MMA tiling with
    `pieces` multiplies in its int8 MMA; the outliers' lists may then be None (int8_quantize.writes_lists).
    `row_invariant`: each row's bits do not depend on the other rows (the module docstring); it needs the pieces."""
    n, k = weight.shape
    total = quantized.shape[0]
    out = torch.empty(total, n, dtype=dtype, device=quantized.device)
    if row_invariant and pieces is None:
        raise ValueError(
            "the row-invariant int8 product computes the outliers' term from their int8 pieces: quantise the input "
            "with int8_quantize.quantize_rows(..., row_invariant=True) and pass pieces=(rows.pieces, "
            "rows.piece_scales)"
        )
    chosen = tiling or tiling_for(n, k, total, pieces=pieces is not None)
    if not chosen.mma and k % 4:
        if tiling is not None:
            raise ValueError(f"the one-row int8 kernel reads K in words of four; K = {k} needs an MMA tiling")
        chosen = MMA_TILING
    # Row-invariant MMAs always take the pieces: the bf16 MMA's float32 sums depend on the order of the blocks.
    in_pieces = chosen.mma and pieces is not None and (chosen.pieces or row_invariant)
    if not in_pieces and (outliers is None or columns is None or counts is None):
        raise ValueError(
            f"the int8 tiling {chosen} reads the outliers' lists, which this input's quantisation did not write: "
            "quantise with int8_quantize.quantize_rows(..., lists=True), or pass a tiling with pieces"
        )
    per_launch = MAX_ROWS if in_pieces or not chosen.mma else MMA_ROWS
    piece_rows, piece_scales = pieces if pieces is not None else (quantized, row_absmax)
    # The kernels do not touch what their path does not read: the int8 rows stand in for lists not written.
    outliers, columns, counts = (quantized if t is None else t for t in (outliers, columns, counts))
    for first in range(0, total, per_launch):
        rows = min(per_launch, total - first)
        scales = (row_absmax[first:], weight_absmax, out[first:], n)
        grid = (triton.cdiv(n, chosen.outputs),)
        shared = {"K": k, "OUT_DTYPE": tl_dtype(dtype), "BLOCK_N": chosen.outputs, "BLOCK_K": chosen.columns}
        launch = programmatic_launch.triton_options(quantized.device)
        if in_pieces and chosen.splits > 1:
            split = triton.cdiv(triton.cdiv(k, chosen.splits), chosen.columns) * chosen.columns
            splits = triton.cdiv(k, split)
            partials = torch.empty(splits, n, PIECE_COLUMNS, dtype=torch.int32, device=quantized.device)
            _split_pieces_kernel[(grid[0], splits)](
                quantized[first:],
                piece_rows[first:],
                weight,
                partials,
                n,
                rows,
                K=k,
                SPLIT=split,
                BLOCK_N=chosen.outputs,
                BLOCK_K=chosen.columns,
                WEIGHTS_FIRST=programmatic_launch.WEIGHTS_FIRST,
                num_warps=chosen.warps,
                num_stages=chosen.stages,
                **launch,
            )
            _combine_splits_kernel[(triton.cdiv(n, COMBINE_OUTPUTS),)](
                partials, piece_scales[first:], *scales, rows, SPLITS=splits, BLOCK_N=COMBINE_OUTPUTS,
                OUT_DTYPE=shared["OUT_DTYPE"], **launch,
            )  # fmt: skip
        elif chosen.mma:
            _eight_bit_mma_kernel[grid](
                quantized[first:],
                outliers[first:],
                piece_rows[first:],
                piece_scales[first:],
                weight,
                *scales,
                rows,
                ROWS_MMA=PIECE_COLUMNS if in_pieces else MMA_ROWS,
                # Triton's CPU interpreter multiplies 16-bit dot operands as their raw bits.
                SIXTEEN_BIT_DOT=dtype != torch.float32 and not triton_support.INTERPRETED,
                PIECES=in_pieces,
                WEIGHTS_FIRST=programmatic_launch.WEIGHTS_FIRST,
                num_warps=chosen.warps,
                num_stages=chosen.stages,
                **shared,
                **launch,
            )
        else:
            _eight_bit_kernel[grid](
                quantized[first:].view(torch.int32),
                outliers[first:],
                columns[first:],
                counts[first:],
                piece_rows[first:],
                piece_scales[first:],
                weight.view(torch.int32),
                weight,
                *scales,
                ROWS=rows,
                ROWS_P2=triton.next_power_of_2(rows),
                DP4A=not triton_support.INTERPRETED,
                EXACT_OUTLIERS=row_invariant,
                WEIGHTS_FIRST=programmatic_launch.WEIGHTS_FIRST,
                num_warps=chosen.warps,
                num_stages=chosen.stages,
                **shared,
                **launch,
            )
    return out
