"""bitsandbytes' quantized linears, computed so that a CUDA graph can capture them, and fast at 1-8 rows.

LLM.int8() (8-bit) finds the input's outlier columns with `argwhere`, a shape known only on the host, so its
forward cannot be captured. Here it is computed per row, as bitsandbytes does for a batch of one: the input is
cast to float16; elements with |x| ≥ threshold are outliers, left out of the row's absmax and of the int8
product; the int8 product is summed exactly and dequantised as bitsandbytes does; the outliers' product with
the dequantised weight is added. Instead of gathering the outlier columns, the outliers are kept in a dense
row that is zero elsewhere, so shapes never depend on the data. On CUDA with Triton the quantisation is one
kernel (`int8_quantize`) and the product another (`int8_gemv`); elsewhere torch ops, bitsandbytes' int8 ops and
a dense outlier product.

4-bit layers capture as they are; on CUDA with Triton, those computing in float32 (transformers' default) run
`four_bit_cuda`'s kernels (CUDA C++ compiled by NVRTC: the tensor cores for bf16 / fp16 inputs, else the CUDA
cores) where they compile, else `four_bit_gemv` (Triton): all compute bitsandbytes' GEMV sums in their own order
(the tensor-core kernel with the code values in the input's format), faster. Other compute dtypes, and nested
(double-quantised) absmax, keep bitsandbytes' kernel.

Where the step's kernels launch programmatically (Hopper), the bf16 / fp16 plain linears run `batch_invariant_matmul`
instead of cuBLAS, in every mode (`runs_invariant_matmul`).

Deterministic (`deterministic=True`, with kernels): every linear's rows are computed independently of the other
rows, so a request's tokens do not depend on what shares its batch. Every plain linear (and lm_head) runs
`batch_invariant_matmul`; the int8 product runs `int8_gemv`'s row-invariant form (every kernel
sums the outliers' term exactly from their int8 pieces and rounds it once, so a row's bits do not depend on which
kernel its batch took); the 4-bit layers run the tensor-core kernel at every row count, which orders each row's sums
by the layer's shape alone, and where it does not run, the CUDA-core kernel (alike) or `four_bit_gemv`'s
INVARIANT_TILING (its faster tilings depend on the rows launched together);
the other 4-bit layers (bitsandbytes computes one row and several differently)
are dequantised and run the invariant matmul.

Where the packed tensor-core kernel runs (bf16 / fp16 inputs), the 4-bit layers are packed for it once
(`pack_four_bit`, `packed_four_bit`) and run it at every row count, deterministic or not: one order of sums a layer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..kernels import (
    batch_invariant_matmul,
    four_bit_cuda,
    four_bit_gemv,
    int8_gemv,
    int8_quantize,
    programmatic_launch,
    triton_support,
)
from ..request.quantized_layers import bitsandbytes_linears
from . import packed_four_bit
from .module_forwards import replaced_forwards


def four_bit_kernel_computes(module: Any) -> bool:
    """Whether `four_bit_gemv` computes exactly what this 4-bit layer's bitsandbytes forward computes."""
    state = getattr(module.weight, "quant_state", None)
    return (
        state is not None
        and module.weight.dtype == torch.uint8  # bnb_4bit_quant_storage other than uint8 packs differently
        and module.compute_dtype == torch.float32
        and not state.nested
        and not getattr(state, "packing_format_for_cpu", False)
        and state.shape[1] % state.blocksize == 0
    )


def runs_invariant_matmul(weight: torch.Tensor, deterministic: bool) -> bool:
    """Whether the decode step computes a plain linear of `weight` with `batch_invariant_matmul` (else torch's linear,
    cuBLAS): when deterministic, and in every mode for a bf16 / fp16 weight where the step's kernels launch
    programmatically (compute capability 9.0+). There every kernel of the bf16 step launches so, and the two modes add
    the same sums in the same order: the captured bf16 step took 4.138 ms at one row against cuBLAS's 4.240, 4.657
    against 4.693 at 8 rows (H68), and deterministic decoding cost nothing (H70). Launched plainly, as before Hopper,
    the matmul's step was 0.8% behind cuBLAS's at one row (4.316 against 4.283 ms, H67): cuBLAS there."""
    bf16_or_fp16 = weight.dtype in (torch.bfloat16, torch.float16)
    fast_here = triton_support.available(weight.device) and programmatic_launch.supported(weight.device)
    return deterministic or (bf16_or_fp16 and fast_here)


def compile_four_bit_kernels_early(device: torch.device) -> None:
    """For a 4-bit load onto `device`: the CUDA kernels for bf16 and fp16 inputs compile while the weights load
    (`DecodeLinears` finds them compiled, or waits for the compile under way), not after."""
    four_bit_cuda.compile_in_background(device)


def four_bit_product(  # noqa: PLR0917 - the kernels' operands, in their order
    x: torch.Tensor,
    packed: torch.Tensor,
    absmax: torch.Tensor,
    code: torch.Tensor,
    shape: tuple[int, int],
    blocksize: int,
    *,
    bias: torch.Tensor | None = None,
    deterministic: bool = False,
) -> torch.Tensor:
    """A float32-compute 4-bit layer's product at the decode step's rows ([rows, K] → [rows, N]): a CUDA kernel where
    one runs, the tensor-core one from 3 rows or when deterministic (`four_bit_cuda.tensor_cores_for`; each kernel's
    sums are ordered alike at every row count), else the Triton kernel (deterministic: its row-independent
    tiling)."""
    operands = (x, packed, absmax, shape, blocksize)
    if four_bit_cuda.tensor_cores_for(x.shape[0], deterministic) and four_bit_cuda.mma_usable(*operands):
        return four_bit_cuda.four_bit_mma_cuda(x, packed, absmax, code, shape, blocksize, bias)
    if four_bit_cuda.usable(*operands):
        return four_bit_cuda.four_bit_gemv_cuda(x, packed, absmax, code, shape, blocksize, bias)
    tiling = four_bit_gemv.INVARIANT_TILING if deterministic else None
    return four_bit_gemv.four_bit_gemv(x, packed, absmax, code, shape, blocksize, bias, tiling)


class QuantizedInput:
    """The int8 form of a layer input (computed once for q/k/v and for gate/up, which read the same input)."""

    by_kernels: bool  # quantised by int8_quantize's kernel: the product runs int8_gemv
    outliers: torch.Tensor | None  # zero off the outlier columns; None for threshold 0 without kernels, and where
    columns: torch.Tensor | None  # the kernel does not write the outliers' lists (int8_quantize.writes_lists):
    counts: torch.Tensor | None  # each row's outlier columns and their counts (int8_quantize.outlier_columns)
    pieces: tuple[torch.Tensor, torch.Tensor] | None  # the outliers as int8 pieces and their scales (writes_pieces)

    @classmethod
    def from_rows(cls, rows: int8_quantize.QuantizedRows) -> QuantizedInput:
        """The form the kernel made elsewhere (`step_kernels.add_rms_norm_quantized`)."""
        made = cls.__new__(cls)
        made._take(rows)
        return made

    def _take(self, rows: int8_quantize.QuantizedRows) -> None:
        self.by_kernels = True
        self.quantized, self.stats, self.outliers, self.columns, self.counts = rows[:5]
        self.pieces = None if rows.pieces is None or rows.piece_scales is None else (rows.pieces, rows.piece_scales)

    def __init__(self, source: torch.Tensor, threshold: float, kernels: bool, row_invariant: bool = False) -> None:
        """`row_invariant`: for the row-invariant product (deterministic decoding), which needs the pieces."""
        rows = source.reshape(-1, source.shape[-1])
        if kernels:
            self._take(int8_quantize.quantize_rows(rows, threshold, row_invariant))
            return
        self.by_kernels = False
        self.columns = self.counts = self.pieces = None
        half = rows.to(torch.float16)
        magnitude = half.abs()
        if threshold > 0.0:
            outlier = magnitude >= threshold
            self.stats = magnitude.masked_fill(outlier, 0).amax(dim=1).float()
            scaled = half.masked_fill(outlier, 0).float() * (127.0 / self.stats[:, None])
            self.outliers = rows.float() * outlier
        else:
            self.stats = magnitude.amax(dim=1).float()
            scaled = half.float() * (127.0 / self.stats[:, None])
            self.outliers = None
        self.quantized = torch.round(scaled).to(torch.int8)


class DecodeLinears:
    """Swaps the text model's 8-bit linears (and, with kernels, float32-compute 4-bit ones) for the capturable
    forms inside `capturable()`."""

    def __init__(self, model: Any, kernels: bool | None = None, deterministic: bool = False) -> None:
        eight_bit, four_bit = bitsandbytes_linears() or (None, None)
        modules = [*model.model.text_model.modules(), model.lm_head]
        self.kernels = triton_support.available(model.device) if kernels is None else kernels
        self.deterministic = deterministic and self.kernels
        self.eight_bit = [m for m in modules if eight_bit is not None and isinstance(m, eight_bit)]
        four_bits = [m for m in modules if four_bit is not None and isinstance(m, four_bit)]
        self.four_bit = [m for m in four_bits if self.kernels and four_bit_kernel_computes(m)]
        # The inputs' dtype where the 4-bit layers are packed for the packed tensor-core kernel (`pack_four_bit`).
        self.pack_dtype: torch.dtype | None = None
        if self.four_bit:  # compiled now, not on a first call inside a graph's capture
            text_parameters = model.model.text_model.parameters()
            dtype = next((p.dtype for p in text_parameters if p.is_floating_point()), None)
            if dtype is not None and four_bit_cuda.kernels(dtype, torch.device(model.device)) is not None:
                self.pack_dtype = dtype if dtype in four_bit_cuda.MMA_DTYPES else None
        # Deterministic only: the 4-bit layers four_bit_gemv does not compute.
        self.four_bit_dequantized = [m for m in four_bits if self.deterministic and m not in self.four_bit]
        self.dense = [
            m for m in modules if type(m) is torch.nn.Linear and runs_invariant_matmul(m.weight, self.deterministic)
        ]
        self._last: tuple[torch.Tensor, QuantizedInput] | None = None
        self._dense_ids = {id(module) for module in self.dense}

    def pack_four_bit(self) -> None:
        """Packs the 4-bit layers not yet packed (a fused group packs its own, `FusedProjection.of`) for the packed
        tensor-core kernel, where it runs for them (`packed_four_bit`)."""
        if self.pack_dtype is None:
            return
        for module in self.four_bit:
            state = module.weight.quant_state
            shape, blocksize = (int(state.shape[0]), int(state.shape[1])), int(state.blocksize)
            usable = four_bit_cuda.packed_usable(self.pack_dtype, module.weight.device, shape, blocksize)
            if packed_four_bit.packed_of(module) is None and usable:
                packed_four_bit.pack([module], module.weight.data, state.absmax)
        # bitsandbytes' layout is gone; the caching allocator would keep its blocks, which the KV cache's larger
        # tensors cannot reuse, and the card would show both layouts' memory.
        torch.cuda.empty_cache()

    @contextmanager
    def capturable(self) -> Iterator[None]:
        for module in self.eight_bit:
            if module.weight.CB is not None:
                module.init_8bit_state()
        replacements = [
            *((module, self._forward_of(module, self._eight_bit)) for module in self.eight_bit),
            *((module, self._forward_of(module, self._four_bit)) for module in self.four_bit),
            *((module, self._forward_of(module, self._four_bit_dequantized)) for module in self.four_bit_dequantized),
            *((module, self._forward_of(module, self._dense)) for module in self.dense),
        ]
        try:
            with replaced_forwards(replacements):
                yield
        finally:
            self._last = None

    @staticmethod
    def _forward_of(module: Any, compute: Any) -> Any:
        def forward(x: torch.Tensor) -> torch.Tensor:
            return compute(module, x)

        return forward

    def _four_bit(self, module: Any, x: torch.Tensor) -> torch.Tensor:
        state = module.weight.quant_state
        bias = None if module.bias is None else module.bias.to(torch.float32)
        rows = x.reshape(-1, x.shape[-1])
        packed = packed_four_bit.packed_of(module)
        if packed is not None and packed.alone:
            out = four_bit_cuda.four_bit_mma_packed_cuda(
                rows, packed.whole, state.code, tuple(state.shape), state.blocksize, bias
            )
            return out.reshape(*x.shape[:-1], out.shape[-1])
        with packed_four_bit.bitsandbytes_layout(module):  # a layer of a group packed together: unpacked for the call
            out = four_bit_product(
                rows,
                module.weight.data.view(-1),
                state.absmax,
                state.code,
                tuple(state.shape),
                state.blocksize,
                bias=bias,
                deterministic=self.deterministic,
            )
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def split_product(self, module: Any, x: torch.Tensor) -> torch.Tensor | batch_invariant_matmul.SplitSums:
        """module(x) inside `capturable`; for a plain linear on the batch-invariant matmul whose K is split, the partial
        sums not yet added (`batch_invariant_matmul.split_linear`), which the step's add + norm adds itself
        (`step_kernels.add_rms_norm`: the same bits, one launch fewer)."""
        if id(module) not in self._dense_ids:
            return module(x)
        return batch_invariant_matmul.split_linear(x, module.weight, module.bias)

    @staticmethod
    def _dense(module: Any, x: torch.Tensor) -> torch.Tensor:
        return batch_invariant_matmul.linear(x, module.weight, module.bias)

    @staticmethod
    def _four_bit_dequantized(module: Any, x: torch.Tensor) -> torch.Tensor:
        from bitsandbytes.functional import dequantize_4bit

        weight = dequantize_4bit(module.weight.data, module.weight.quant_state).to(x.dtype)
        bias = None if module.bias is None else module.bias.to(x.dtype)
        return batch_invariant_matmul.linear(x, weight, bias)

    def _quantize(self, x: torch.Tensor, threshold: float) -> QuantizedInput:
        if self._last is not None and self._last[0] is x:
            return self._last[1]
        quantized = QuantizedInput(x, threshold, self.kernels, self.deterministic)
        self._last = (x, quantized)
        return quantized

    def _eight_bit(self, module: Any, x: torch.Tensor) -> torch.Tensor:
        state = module.state
        bias = module.bias
        if bias is not None and bias.dtype != x.dtype:
            bias = bias.to(x.dtype)
        quantized = self._quantize(x, float(state.threshold))
        weight, scales = eight_bit_weight(module)
        if quantized.by_kernels:
            out = eight_bit_kernel_product(quantized, weight, scales, x.dtype, self.deterministic)
            if bias is not None:
                out = out + bias
        else:
            out = torch.ops.bitsandbytes.int8_scaled_mm.default(
                quantized.quantized, weight, quantized.stats, scales, bias=bias, dtype=x.dtype
            )
            if quantized.outliers is not None:
                weights = (weight.float() * scales[:, None] * int8_gemv.VECTORWISE_DEQUANT_SCALE).to(x.dtype)
                out = out.addmm(quantized.outliers.to(x.dtype), weights.t())
        return out.reshape(*x.shape[:-1], out.shape[-1])


def eight_bit_weight(module: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """An LLM.int8() layer's int8 weight [out, in] and its rows' absmax (its state holds them once it has run)."""
    state, weight = module.state, module.weight
    quantized = state.CB if state.CB is not None else weight.CB
    scales = state.SCB if state.SCB is not None else weight.SCB
    return quantized, scales


def eight_bit_kernel_product(
    quantized: QuantizedInput, weight: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype, deterministic: bool
) -> torch.Tensor:
    """The int8 product of an input quantised with kernels (`QuantizedInput(..., kernels=True)`): [rows, out]."""
    return int8_gemv.eight_bit_gemv(
        quantized.quantized,
        quantized.outliers,
        quantized.columns,
        quantized.counts,
        weight,
        quantized.stats,
        scales,
        dtype,
        row_invariant=deterministic,
        pieces=quantized.pieces,
    )
