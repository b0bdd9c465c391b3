"""The fast decoder's 4-bit layers, repacked in place into the packed tensor-core kernel's layout (`four_bit_packing`).

On an H200 the packed kernel reads idefics2-8b's 4-bit linears in 1.60 ms a token at one row and 1.82 at eight, where
bitsandbytes' layout allowed 1.86 (CUDA cores) and 2.59 (tensor cores) (H48, docs/BENCHMARKS.md). Keeping both layouts
would double the 4-bit weights' memory, so the packed one replaces bitsandbytes': each module's Params4bit data and
absmax become views of its packed tiles (a fused group's, `FusedProjection`, lie in one packed tensor), and every
path that reads them knows the layout:
- the decode step runs the packed kernel (`DecodeLinears`, `FusedProjection`);
- the prefill dequantises the packed layout directly (`prefill_linears.dequantized_weight`);
- everything else that calls the module (generate() for requests the fast decoder does not take, prompts too short
  for the prefill's GEMMs) runs bitsandbytes' own forward on its layout, unpacked for the call: the same kernel on
  the same bytes, so the same bits as before, at the cost of one unpacking copy of the layer a call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from ..kernels import four_bit_packing
from ..kernels.four_bit_packing import TILE_OUTPUTS, PackedFourBit

_KEY = "_idefics2_packed_four_bit"


@dataclass(frozen=True)
class PackedLayer:
    """A module's packed weights: `own`, its tiles, views into `whole`, the packed tensor the kernel reads (its own,
    padded, or its fused group's, where its tiles start at `first_tile`; the group's layers fill `group_tiles`)."""

    own: PackedFourBit
    whole: PackedFourBit
    first_tile: int
    group_tiles: int

    @property
    def alone(self) -> bool:
        """Whether `whole` holds this layer's outputs and no other's (the kernel can run it by itself)."""
        return self.first_tile == 0 and self.own.tiles == self.group_tiles


def packed_of(module: Any) -> PackedLayer | None:
    """The module's packed weights, or None where it keeps bitsandbytes' layout."""
    return module.__dict__.get(_KEY)


def pack(modules: Sequence[Any], codes: torch.Tensor, absmax: torch.Tensor) -> PackedFourBit:
    """Packs 4-bit modules whose bitsandbytes codes and absmax are `codes` and `absmax` (one module's, or a group's
    joined along the outputs, each a whole number of 16-output tiles), in place: each module's data and absmax become
    views of the packed tensor, returned, and its forward the exact one (`bitsandbytes_forward`)."""
    states = [module.weight.quant_state for module in modules]
    k, blocksize = int(states[0].shape[1]), int(states[0].blocksize)
    outputs = [int(state.shape[0]) for state in states]
    if any(n % TILE_OUTPUTS for n in outputs):
        raise ValueError(f"layers of {outputs} outputs: the packed layout takes whole tiles of {TILE_OUTPUTS}")
    whole = four_bit_packing.pack(codes, absmax, (sum(outputs), k), blocksize)
    first = 0
    for module, state, n in zip(modules, states, outputs, strict=True):
        own = whole.part(first, n // TILE_OUTPUTS)
        module.weight.data = own.weights
        state.absmax = own.scales
        module.__dict__[_KEY] = PackedLayer(own, whole, first, sum(outputs) // TILE_OUTPUTS)
        module.__dict__["forward"] = bitsandbytes_forward(module)
        first += n // TILE_OUTPUTS
    return whole


def packed_together(modules: Sequence[Any]) -> PackedFourBit | None:
    """The packed tensor the modules lie in, in their order and nothing else, where an earlier `pack` put them there."""
    layers = [packed_of(module) for module in modules]
    if any(layer is None for layer in layers):
        return None
    whole, group_tiles = layers[0].whole, layers[0].group_tiles  # type: ignore[union-attr]
    first = 0
    for layer in layers:
        if layer is None or layer.whole is not whole or layer.first_tile != first:
            return None
        first += layer.own.tiles
    return whole if first == group_tiles else None


@contextmanager
def bitsandbytes_layout(module: Any) -> Iterator[None]:
    """Inside, a packed module's data and absmax are bitsandbytes' own again (new tensors, unpacked from the packed
    ones); after, the packed views."""
    layer = packed_of(module)
    if layer is None:
        yield
        return
    weight, state = module.weight, module.weight.quant_state
    packed_codes, packed_absmax = weight.data, state.absmax
    shape = (int(state.shape[0]), int(state.shape[1]))
    weight.data, state.absmax = four_bit_packing.unpack(layer.own, shape, int(state.blocksize))
    try:
        yield
    finally:
        weight.data, state.absmax = packed_codes, packed_absmax


def bitsandbytes_forward(module: Any) -> Callable[[torch.Tensor], Any]:
    """The module's forward as it was (bitsandbytes' Linear4bit's, or a hook's around it) on its layout, unpacked for
    the call."""
    previous = module.forward

    def forward(x: torch.Tensor) -> Any:
        with bitsandbytes_layout(module):
            return previous(x)

    return forward
