"""bitsandbytes' 4-bit weights in the layout the packed tensor-core kernel reads (`four_bit_mma.cu`'s
`four_bit_mma_packed`), and back.

bitsandbytes stores a layer's codes output by output ([N · K / 2] bytes) and its float32 absmax a block of weights
at a time. A tensor-core step takes 64 weights of 16 outputs; from that layout a warp gathers them with ~7 global
load requests per 512 bytes, each touching up to 8 lines, and waits on them (Nsight Compute, H45). Packed once at
load, a tile's step is 512 contiguous bytes, one 16-byte load a lane: lane (g, t) holds bytes 8t..8t+7 of output g's
step, then those of output g + 8; its absmax pairs (output g, output g + 8) lie together. The bytes are the same
codes, so every product computed from them is unchanged; `unpack` gives bitsandbytes' layout back, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Weights along K a tensor-core kernel's step takes (one absmax each), and outputs a warp's tile.
STEP_WEIGHTS = 64
TILE_OUTPUTS = 16
# Tiles the packed layout pads to a multiple of: every group of a block (tiles · groups a power of two ≤ 64).
PACK_TILES = 64


@dataclass(frozen=True)
class PackedFourBit:
    """A 4-bit layer's codes ([tiles · 16 · K / 2] bytes) and float32 absmax ([tiles · 16 · K / blocksize]) in the
    packed layout; `tiles` 16-output tiles, the ones past the layer's outputs zero."""

    weights: torch.Tensor
    scales: torch.Tensor
    tiles: int

    def part(self, first_tile: int, tiles: int) -> PackedFourBit:
        """Tiles first_tile .. first_tile + tiles - 1 as a layer of their own: views, no copy."""
        weights_a_tile = self.weights.numel() // self.tiles
        scales_a_tile = self.scales.numel() // self.tiles
        return PackedFourBit(
            self.weights[first_tile * weights_a_tile : (first_tile + tiles) * weights_a_tile],
            self.scales[first_tile * scales_a_tile : (first_tile + tiles) * scales_a_tile],
            tiles,
        )


def layout_fits(shape: tuple[int, int], blocksize: int) -> bool:
    """Whether a layer of [N outputs, K inputs] packs: whole steps in a quantisation block, whole blocks along K."""
    _, k = shape
    return blocksize % STEP_WEIGHTS == 0 and k % blocksize == 0


def pack(packed: torch.Tensor, absmax: torch.Tensor, shape: tuple[int, int], blocksize: int) -> PackedFourBit:
    """bitsandbytes' codes ([N · K / 2] bytes, output-major) and float32 absmax in the packed layout, the outputs
    padded with zeros to a multiple of PACK_TILES tiles."""
    n, k = shape
    steps, blocks = k // STEP_WEIGHTS, k // blocksize
    tiles = -(-n // (TILE_OUTPUTS * PACK_TILES)) * PACK_TILES
    outputs = tiles * TILE_OUTPUTS
    weights = torch.zeros(outputs, k // 2, dtype=torch.uint8, device=packed.device)
    weights[:n] = packed.reshape(n, k // 2)
    scales = torch.zeros(outputs, blocks, dtype=torch.float32, device=absmax.device)
    scales[:n] = absmax.reshape(n, blocks)
    # [tile, half (g or g + 8), g, step, t, byte] → [tile, step, g, t, half, byte]
    weights = weights.view(tiles, 2, 8, steps, 4, 8).permute(0, 3, 2, 4, 1, 5).contiguous().view(-1)
    # [tile, half, g, block] → [tile, block, g, half]
    scales = scales.view(tiles, 2, 8, blocks).permute(0, 3, 2, 1).contiguous().view(-1)
    return PackedFourBit(weights, scales, tiles)


def unpack(layer: PackedFourBit, shape: tuple[int, int], blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`pack`'s inverse: bitsandbytes' codes ([N · K / 2, 1] bytes, as Params4bit holds them) and absmax ([N · K /
    blocksize]), new tensors."""
    n, k = shape
    steps, blocks = k // STEP_WEIGHTS, k // blocksize
    weights = layer.weights.view(layer.tiles, steps, 8, 4, 2, 8).permute(0, 4, 2, 1, 3, 5)
    scales = layer.scales.view(layer.tiles, blocks, 8, 2).permute(0, 3, 2, 1)
    codes = weights.reshape(layer.tiles * TILE_OUTPUTS, k // 2)[:n].reshape(-1, 1)
    absmax = scales.reshape(layer.tiles * TILE_OUTPUTS, blocks)[:n].reshape(-1)
    return codes.contiguous(), absmax.contiguous()
