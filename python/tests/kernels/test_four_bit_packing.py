"""The packed layout of 4-bit weights (four_bit_packing): each lane's 16 bytes are its two outputs' codes for a step,
each tile's absmax pairs lie together, padding is zeros, and unpacking gives bitsandbytes' layout back bit for bit.
The packed kernel that reads it runs on a GPU only (scripts/gpu/tune_four_bit_cuda.py --kernel packed checks its bits
against the unpacked kernel's)."""

from __future__ import annotations

import pytest
import torch

from idefics2_worker.kernels import four_bit_packing

SHAPES = [(40, 256, 64), (130, 1024, 256), (16, 64, 64), (1000, 512, 128), (2048, 128, 128)]


def _layer(n: int, k: int, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randint(0, 256, (n * k // 2, 1), dtype=torch.uint8), torch.rand(n * k // blocksize)


@pytest.mark.parametrize(("n", "k", "blocksize"), SHAPES)
def test_each_lane_holds_its_two_outputs_bytes_and_each_tile_its_absmax_pairs(n: int, k: int, blocksize: int) -> None:
    codes, absmax = _layer(n, k, blocksize)
    layer = four_bit_packing.pack(codes, absmax, (n, k), blocksize)
    steps, blocks = k // 64, k // blocksize
    assert layer.tiles % four_bit_packing.PACK_TILES == 0
    assert (layer.tiles - four_bit_packing.PACK_TILES) * 16 < n <= layer.tiles * 16
    rows = codes.view(n, k // 2)
    lanes = layer.weights.view(layer.tiles, steps, 8, 4, 2, 8)  # tile, step, g, t, (g or g + 8), byte
    pairs = layer.scales.view(layer.tiles, blocks, 8, 2)
    for tile in (0, (n - 1) // 16):
        for g in range(8):
            for half in range(2):
                row = 16 * tile + g + 8 * half
                if row >= n:
                    assert not lanes[tile, :, g, :, half].any()
                    assert not pairs[tile, :, g, half].any()
                    continue
                for step in range(steps):
                    for t in range(4):
                        start = step * 32 + 8 * t
                        assert torch.equal(lanes[tile, step, g, t, half], rows[row, start : start + 8])
                assert torch.equal(pairs[tile, :, g, half], absmax.view(n, blocks)[row])
    assert not lanes[(n + 15) // 16 :].any()  # the padding's tiles


@pytest.mark.parametrize(("n", "k", "blocksize"), SHAPES)
def test_unpacking_gives_bitsandbytes_layout_back(n: int, k: int, blocksize: int) -> None:
    codes, absmax = _layer(n, k, blocksize)
    back_codes, back_absmax = four_bit_packing.unpack(
        four_bit_packing.pack(codes, absmax, (n, k), blocksize), (n, k), blocksize
    )
    assert back_codes.shape == codes.shape
    assert torch.equal(back_codes, codes)
    assert torch.equal(back_absmax, absmax)


def test_a_groups_layers_are_runs_of_its_tiles() -> None:
    sizes, k, blocksize = (64, 16, 32), 256, 64
    layers = [_layer(n, k, blocksize) for n in sizes]
    whole = four_bit_packing.pack(
        torch.cat([c for c, _ in layers]), torch.cat([a for _, a in layers]), (112, k), blocksize
    )
    first = 0
    for n, (codes, absmax) in zip(sizes, layers, strict=True):
        part = whole.part(first, n // 16)
        assert part.weights.untyped_storage().data_ptr() == whole.weights.untyped_storage().data_ptr()  # views
        back_codes, back_absmax = four_bit_packing.unpack(part, (n, k), blocksize)
        assert torch.equal(back_codes, codes)
        assert torch.equal(back_absmax, absmax)
        first += n // 16


def test_layers_of_part_steps_or_part_blocks_do_not_pack() -> None:
    assert four_bit_packing.layout_fits((16, 4096), 64)
    assert not four_bit_packing.layout_fits((16, 4096), 32)  # a step would straddle two blocks' absmax
    assert not four_bit_packing.layout_fits((16, 4160), 128)  # K not whole blocks
