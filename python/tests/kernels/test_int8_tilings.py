"""`int8_gemv.tiling_for` and `int8_quantize.writes_pieces` / `writes_lists` agree: the quantisation writes the
outliers' pieces at exactly the row counts where some layer's tiling reads them (and at every row count for the
row-invariant product, which needs them), and their lists wherever a tiling reads those; a tiling takes the pieces
only where the caller has them."""

from __future__ import annotations

import pytest
import torch

from idefics2_worker.kernels import int8_gemv, int8_quantize

# idefics2-8b's text layers (outputs, inputs): fused q/k/v, o, fused gate/up, down; and a tiny model's.
SHAPES = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336), (96, 64), (64, 176)]


@pytest.mark.parametrize("rows", range(1, int8_gemv.MAX_ROWS + 1))
def test_pieces_are_written_where_a_tiling_reads_them(rows: int) -> None:
    with_pieces = [int8_gemv.tiling_for(outputs, inputs, rows, pieces=True) for outputs, inputs in SHAPES]
    assert any(tiling.pieces for tiling in with_pieces) == int8_quantize.writes_pieces(rows)


@pytest.mark.parametrize("rows", [*range(1, int8_gemv.MAX_ROWS + 1), 20])
@pytest.mark.parametrize("row_invariant", [False, True])
def test_lists_are_written_where_a_tiling_reads_them(rows: int, row_invariant: bool) -> None:
    has_pieces = int8_quantize.writes_pieces(rows, row_invariant)
    for outputs, inputs in SHAPES:
        tiling = int8_gemv.tiling_for(outputs, inputs, rows, pieces=has_pieces)
        # Row-invariant MMAs take the pieces whatever the tiling says (int8_gemv.eight_bit_gemv).
        in_pieces = tiling.mma and has_pieces and (tiling.pieces or row_invariant)
        assert in_pieces or int8_quantize.writes_lists(rows), (outputs, inputs, tiling)


def test_a_tiling_that_reads_lists_not_written_says_how_to_get_them() -> None:
    rows, k, n = 6, 64, 16
    operands = (torch.zeros(rows, k, dtype=torch.int8), None, None, None, torch.zeros(n, k, dtype=torch.int8))
    scales = (torch.ones(rows), torch.ones(n), torch.float32)
    pieces = (torch.zeros(rows, 3, k, dtype=torch.int8), torch.zeros(rows))
    with pytest.raises(ValueError, match=r"quantize_rows\(\.\.\., lists=True\)"):
        int8_gemv.eight_bit_gemv(*operands, *scales, int8_gemv.Tiling(8, 64), pieces=pieces)


@pytest.mark.parametrize("rows", range(1, int8_gemv.MAX_ROWS + 1))
@pytest.mark.parametrize("shape", SHAPES)
def test_a_tiling_takes_pieces_and_splits_only_as_an_mma_whose_caller_has_them(
    rows: int, shape: tuple[int, int]
) -> None:
    without = int8_gemv.tiling_for(*shape, rows)
    assert not without.pieces
    assert without.splits == 1
    chosen = int8_gemv.tiling_for(*shape, rows, pieces=True)
    assert chosen.mma or not chosen.pieces
    assert chosen.pieces or chosen.splits == 1
    for tiling in (without, chosen):
        assert tiling.columns >= 4
        assert tiling.columns & (tiling.columns - 1) == 0


@pytest.mark.parametrize("rows", range(1, int8_gemv.MAX_ROWS + 1))
def test_the_row_invariant_product_has_the_pieces_at_every_row_count(rows: int) -> None:
    assert int8_quantize.writes_pieces(rows, row_invariant=True)


def test_the_row_invariant_product_without_pieces_says_how_to_get_them() -> None:
    rows, k, n = 3, 64, 16
    operands = (
        torch.zeros(rows, k, dtype=torch.int8),
        torch.zeros(rows, k),
        torch.zeros(rows, k, dtype=torch.int32),
        torch.zeros(rows, dtype=torch.int32),
        torch.zeros(n, k, dtype=torch.int8),
        torch.ones(rows),
        torch.ones(n),
        torch.float32,
    )
    with pytest.raises(ValueError, match=r"quantize_rows\(\.\.\., row_invariant=True\)"):
        int8_gemv.eight_bit_gemv(*operands, row_invariant=True)
