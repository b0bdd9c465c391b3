"""Projections that read the same input, computed as one product: a layer's q, k and v, and its gate and up.

At batch 1 a decode step is a chain of matrix-vector products, and the narrow ones waste bandwidth: on an H200 the
bf16 k and v projections (8.4 MB each) read at 1.6 TB/s in cuBLAS's split-K kernels, plus a reduce kernel each, and q
at 3.1 TB/s, where the 117 MB gate and up read at 3.8 (docs/BENCHMARKS.md, 2026-12-01, change 9). Concatenating the
weights along the outputs makes one wider product per group, as vLLM's merged linears do. The modules' own weights
become views of the concatenated tensor, so memory does not grow, and every other path (generate(), the prefill)
computes with the same weights as before.

It applies to plain linears without a bias, to the 4-bit layers `four_bit_gemv` computes (one block size and code
table; packed together for the packed tensor-core kernel where it runs, `packed_four_bit`) and to LLM.int8() layers
without a bias (one outlier threshold: the input is quantised once, as the modules
already shared it); groups that differ in dtype, device or input width keep their own modules. Each output is the
same sum as before (4-bit: the same products in the kernel's order; int8: exact int32 sums, the outliers' float32
term in the kernel's order; bf16: the batch-invariant matmul's order for the wider shape where the step's kernels
launch programmatically, elsewhere cuBLAS's, either of which may order its sums differently), and deterministic
decoding runs the batch-invariant matmul on the whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..kernels import batch_invariant_matmul, four_bit_cuda
from ..kernels.four_bit_packing import TILE_OUTPUTS
from ..kernels.int8_dequantize import row_scales_of
from ..request.quantized_layers import bitsandbytes_linears
from . import packed_four_bit
from .linears import (
    QuantizedInput,
    eight_bit_kernel_product,
    eight_bit_weight,
    four_bit_kernel_computes,
    four_bit_product,
    runs_invariant_matmul,
)

Product = Callable[[torch.Tensor], torch.Tensor]
_JOINED = "_joined_weights"  # the module __dict__ key of its group's `JoinedWeights`


@dataclass(frozen=True)
class JoinedWeights:
    """A fused group's weights as they now lie, back to back along the outputs: the dense weight, or LLM.int8()'s
    int8 rows (CB) and their scales (SCB). Module i's outputs are columns `sizes[i]` of a product with them, in the
    modules' order. Other forwards of the same modules read it (`joined_of`): the prefill's (`prefill_projections`)."""

    modules: tuple[Any, ...]
    weight: torch.Tensor
    scales: torch.Tensor | None
    sizes: tuple[int, ...]
    # int8: each row's multiplier (`int8_dequantize.row_scales_of`), made once with the group.
    row_scales: torch.Tensor | None = None


def joined_of(module: Any) -> JoinedWeights | None:
    """The group `FusedProjection.of` joined `module`'s weights into, or None."""
    return module.__dict__.get(_JOINED)


def _mark(modules: Sequence[Any], weight: torch.Tensor, scales: torch.Tensor | None = None) -> None:
    sizes = tuple(int(module.out_features) for module in modules)
    row_scales = None if scales is None else row_scales_of(scales)
    joined = JoinedWeights(tuple(modules), weight, scales, sizes, row_scales)
    for module in modules:
        module.__dict__[_JOINED] = joined


def _adjacent_view(parts: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The parts (contiguous, same dtype and trailing shape) as one tensor along dim 0 when they already lie back to
    back in one storage (an earlier `FusedProjection.of` put them there), else None."""
    first = parts[0]
    storage = first.untyped_storage().data_ptr()
    offset = first.storage_offset()
    for part in parts:
        if not part.is_contiguous() or part.dtype != first.dtype or part.untyped_storage().data_ptr() != storage:
            return None
        if part.storage_offset() != offset:
            return None
        offset += part.numel()
    rows = sum(part.shape[0] for part in parts)
    return first.as_strided((rows, *first.shape[1:]), first.stride(), first.storage_offset())


def _joined(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """The parts as one tensor along dim 0: a view where they already lie back to back (a step built earlier fused
    them), else a new tensor."""
    view = _adjacent_view(parts)
    return view if view is not None else torch.cat(list(parts))


def _pointed_at(joined: torch.Tensor, parts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return list(joined.split([part.shape[0] for part in parts]))


def _dense(modules: Sequence[Any], deterministic: bool) -> Product | None:
    weights = [module.weight for module in modules]
    plain = all(type(module) is torch.nn.Linear and module.bias is None for module in modules)
    if not plain or len({(w.dtype, w.device, w.shape[1]) for w in weights}) != 1:
        return None
    joined = _joined([w.data for w in weights])
    for weight, view in zip(weights, _pointed_at(joined, [w.data for w in weights]), strict=True):
        weight.data = view
    _mark(modules, joined)
    if runs_invariant_matmul(joined, deterministic):
        return lambda x: batch_invariant_matmul.linear(x, joined, None)
    return lambda x: torch.nn.functional.linear(x, joined)


def _four_bit(modules: Sequence[Any], deterministic: bool, pack_dtype: torch.dtype | None) -> Product | None:
    if not all(four_bit_kernel_computes(module) and module.bias is None for module in modules):
        return None
    states = [module.weight.quant_state for module in modules]
    first = states[0]
    alike = all(
        s.blocksize == first.blocksize and s.shape[1] == first.shape[1] and torch.equal(s.code, first.code)
        for s in states
    )
    if not alike:
        return None
    shape = (sum(int(s.shape[0]) for s in states), int(first.shape[1]))
    code, blocksize = first.code, first.blocksize
    together = packed_four_bit.packed_together(modules)
    if together is None and any(packed_four_bit.packed_of(module) is not None for module in modules):
        return None  # packed apart by an earlier step: each keeps its own product
    if together is None:
        packed = _joined([module.weight.data for module in modules])
        absmax = _joined([s.absmax for s in states])
        if pack_dtype is None or not _packable(states, pack_dtype, packed.device, shape, blocksize):
            for module, view in zip(modules, _pointed_at(packed, [m.weight.data for m in modules]), strict=True):
                module.weight.data = view
            for state, view in zip(states, _pointed_at(absmax, [s.absmax for s in states]), strict=True):
                state.absmax = view
            flat = packed.view(-1)
            return _on_rows(
                lambda rows: four_bit_product(rows, flat, absmax, code, shape, blocksize, deterministic=deterministic)
            )
        together = packed_four_bit.pack(modules, packed, absmax)
    whole = together
    return _on_rows(lambda rows: four_bit_cuda.four_bit_mma_packed_cuda(rows, whole, code, shape, blocksize))


def _on_rows(product: Product) -> Product:
    """A product of [rows, K] → [rows, N] as one on x's leading dimensions (x [..., K] → [..., N])."""

    def on_rows(x: torch.Tensor) -> torch.Tensor:
        out = product(x.reshape(-1, x.shape[-1]))
        return out.reshape(*x.shape[:-1], out.shape[-1])

    return on_rows


def _packable(
    states: Sequence[Any], dtype: torch.dtype, device: torch.device, shape: tuple[int, int], blocksize: int
) -> bool:
    """Whether a group packs: each layer whole tiles, the group's shape the packed kernel's."""
    whole_tiles = all(int(s.shape[0]) % TILE_OUTPUTS == 0 for s in states)
    return whole_tiles and four_bit_cuda.packed_usable(dtype, device, shape, blocksize)


@dataclass(frozen=True)
class EightBitInput:
    """An int8 group's input side: its outlier threshold, whether its product is row-invariant (deterministic
    decoding, whose input carries the outliers' pieces at every row count), and its product from an input already
    quantised so (`QuantizedInput.from_rows`; the decode step quantises in its norm's launch)."""

    threshold: float
    row_invariant: bool
    product: Callable[[QuantizedInput, torch.Tensor], torch.Tensor]


def _eight_bit(modules: Sequence[Any], deterministic: bool) -> tuple[Product, EightBitInput] | None:
    classes = bitsandbytes_linears()
    if classes is None or not all(isinstance(module, classes[0]) and module.bias is None for module in modules):
        return None
    weights = [eight_bit_weight(module) for module in modules]
    thresholds = {float(module.state.threshold) for module in modules}
    usable = all(w is not None and s is not None for w, s in weights)
    if not usable or len(thresholds) != 1 or len({(w.device, w.shape[1]) for w, _ in weights}) != 1:
        return None
    quantized = _joined([w for w, _ in weights])
    scales = _joined([s for _, s in weights])
    for module, view, row_scales in zip(
        modules,
        _pointed_at(quantized, [w for w, _ in weights]),
        _pointed_at(scales, [s for _, s in weights]),
        strict=True,
    ):
        # The int8 weight is the parameter's data and its CB, on the parameter until the layer first runs and on
        # its state after (bitsandbytes' init_8bit_state): every reference is pointed at the view.
        module.weight.data = view
        for holder in (module.weight, module.state):
            if getattr(holder, "CB", None) is not None:
                holder.CB = view
                holder.SCB = row_scales
    _mark(modules, quantized, scales)
    (threshold,) = thresholds

    def of_quantized(rows_int8: QuantizedInput, x: torch.Tensor) -> torch.Tensor:
        out = eight_bit_kernel_product(rows_int8, quantized, scales, x.dtype, deterministic)
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def product(x: torch.Tensor) -> torch.Tensor:
        return of_quantized(QuantizedInput(x.reshape(-1, x.shape[-1]), threshold, True, deterministic), x)

    return product, EightBitInput(threshold, deterministic, of_quantized)


class FusedProjection:
    """`projection(x)`: each module's output, from one product over their concatenated weights."""

    def __init__(self, product: Product, sizes: list[int], eight_bit: EightBitInput | None = None) -> None:
        self._product = product
        self.sizes = sizes
        self.eight_bit = eight_bit  # set for LLM.int8() groups

    def __call__(self, x: torch.Tensor, quantized: QuantizedInput | None = None) -> tuple[torch.Tensor, ...]:
        """The outputs for x; an int8 group takes x's quantised form too when the caller has it (`eight_bit`)."""
        if quantized is not None and self.eight_bit is not None:
            return self.eight_bit.product(quantized, x).split(self.sizes, dim=-1)
        return self._product(x).split(self.sizes, dim=-1)

    @staticmethod
    def of(
        modules: Sequence[Any], deterministic: bool, pack_dtype: torch.dtype | None = None
    ) -> FusedProjection | None:
        """The modules fused, or None (and the modules untouched) where they cannot be. `pack_dtype`: the inputs'
        dtype where 4-bit groups are to be packed for the packed tensor-core kernel (`packed_four_bit`)."""
        sizes = [int(module.out_features) for module in modules]
        product = _dense(modules, deterministic) or _four_bit(modules, deterministic, pack_dtype)
        if product is not None:
            return FusedProjection(product, sizes)
        eight_bit = _eight_bit(modules, deterministic)
        return None if eight_bit is None else FusedProjection(eight_bit[0], sizes, eight_bit[1])
