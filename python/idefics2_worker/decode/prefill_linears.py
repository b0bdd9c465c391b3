"""Quantized linears on the tensor cores for a prompt's many rows.

bitsandbytes computes a 4-bit layer in its compute dtype (float32 with the blog's config: CUDA-core GEMMs, 72% of a
4-bit prefill's GPU time on an H200) and LLM.int8() quantises the input row by row and splits its outliers out with
a host-synchronising `argwhere`. For a prompt's hundreds of rows both are far from what the card can do. Here each
layer's weight is dequantised once per call (code * absmax for 4-bit, written straight in the GEMM's dtype as
bitsandbytes' own `gemm_4bit` does, or CB * SCB / 127 for int8; each one Triton kernel on a GPU) and
multiplied in one cuBLAS GEMM, as vLLM and TGI do for prefill. The weights are the same numbers; only the arithmetic
differs (TF32 or bf16 products summed in float32 instead of float32 products, and for int8 no quantisation of the
input at all), so parity is judged as for every fast path: teacher-forced logits within the noise of another valid
kernel (scripts/gpu/gpu_parity.py). A few rows (decode) keep their own forward.

A float32-compute layer may instead multiply in fp16 (`float16_linear`): fp16 keeps TF32's 10-bit mantissa, so the
products are a TF32 GEMM's, at twice its tensor-core rate and half the dequantised bytes; the sums stay float32.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from ..kernels import four_bit_dequantize, saturating_cast, triton_support
from ..kernels.int8_dequantize import int8_dequantize, row_scales_of
from ..request.quantized_layers import bitsandbytes_linears
from . import packed_four_bit
from .linears import eight_bit_weight
from .module_forwards import current_forward, replaced_forwards

# Below this many rows a GEMM on dequantised weights reads more than the layer's own kernel: decode stays as it is.
MIN_ROWS = 16
_TENSOR_CORE_DTYPES = (torch.bfloat16, torch.float16)
# The largest magnitude both bf16 and fp16 hold: an fp16 GEMM's input saturates there instead of becoming inf.
FLOAT16_SATURATION = 65280.0


def dequantized_weight(module: Any, dtype: torch.dtype) -> torch.Tensor:
    """The layer's weight as a dense [out, in] tensor of `dtype`: what its quantized form stands for."""
    weight = module.weight
    state = getattr(weight, "quant_state", None)
    if state is not None:
        packed = packed_four_bit.packed_of(module)  # the fast decoder's layout (packed_four_bit), read as it lies
        if triton_support.available(weight.device) and four_bit_dequantize.supported(state):
            return four_bit_dequantize.four_bit_dequantize(weight.data, state, dtype, packed and packed.own)
        from bitsandbytes.functional import dequantize_4bit

        with packed_four_bit.bitsandbytes_layout(module):
            if state.dtype != dtype:
                # Dequantised in the GEMM's dtype directly, as bitsandbytes' gemm_4bit does for a float32 input: the
                # model's dtype (bf16) would round the weights first and cost a copy per layer (46 ms of a 4-bit
                # prefill).
                state = copy.copy(state)
                state.dtype = dtype
            return dequantize_4bit(weight.data, state)
    quantized, scales = eight_bit_weight(module)
    return dequantized_int8(quantized, scales, dtype, lambda: _row_scales(module, scales))


def dequantized_int8(
    quantized: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype, row_scales: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """LLM.int8()'s weight, CB / 127 * SCB row by row, as a dense tensor of `dtype`; `row_scales` gives the rows'
    multipliers kept for these scales (`int8_dequantize.row_scales_of`), asked for only where the kernel runs."""
    if triton_support.available(quantized.device):
        return int8_dequantize(quantized, scales, dtype, row_scales())
    # One pass (int8 read, `dtype` written; the product in float32): three passes through a float32 copy moved
    # ~140 GB for idefics2-8b's int8 layers, ~35 ms of an 8-bit prefill on an H200.
    weight = torch.empty(quantized.shape, dtype=dtype, device=quantized.device)
    return torch.mul(quantized, scales.to(torch.float32)[:, None] / 127.0, out=weight)


def _row_scales(module: Any, scales: torch.Tensor) -> torch.Tensor:
    """The layer's int8 row multipliers, made once for its scales (one division kernel less per layer per prefill,
    ~600 at 8-bit, where the host's launches are what the GPU waits on)."""
    kept = module.__dict__.get("_prefill_row_scales")
    if kept is None or kept[0] is not scales or kept[1].device != scales.device:
        kept = (scales, row_scales_of(scales))
        module.__dict__["_prefill_row_scales"] = kept
    return kept[1]


def gemm_dtype(module: Any, activations: torch.dtype, float32_gemm: torch.dtype = torch.float32) -> torch.dtype:
    """A 4-bit layer that computes in float32 (the blog's config) multiplies in `float32_gemm`: float32 with TF32
    allowed, on weights dequantised in float32 as bitsandbytes' own forward has them, unless the plan names a
    tensor-core dtype for it; other layers (int8, 4-bit in bf16/fp16) in the activations' dtype."""
    if getattr(module, "compute_dtype", None) == torch.float32:
        return float32_gemm
    return activations if activations in _TENSOR_CORE_DTYPES else torch.float32


def float32_gemm_of(name: str, float32_gemms: Mapping[str, torch.dtype]) -> torch.dtype:
    """The GEMM dtype a plan gives the float32-compute layer `name`: that of the longest module-name prefix it
    names ("" names every layer), else float32."""
    prefixes = [prefix for prefix in float32_gemms if name.startswith(prefix)]
    return float32_gemms[max(prefixes, key=len)] if prefixes else torch.float32


def float16_input(x: torch.Tensor) -> torch.Tensor:
    """x in fp16 for a GEMM. fp16's range is narrower than bf16's: values beyond ±FLOAT16_SATURATION (far beyond a
    Mistral's normed activations, which run in fp16 in many servers) saturate there rather than turn into inf. On a
    GPU one Triton kernel (`saturating_cast`); elsewhere torch's clamp, then its cast: the same numbers."""
    if triton_support.available(x.device):
        return saturating_cast.saturating_float16(x, FLOAT16_SATURATION)
    return x.clamp(-FLOAT16_SATURATION, FLOAT16_SATURATION).to(torch.float16)


def float16_linear(
    half: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """half @ weight.T on fp16 operands (`float16_input`, weight in fp16), summed in float32, returned in `dtype`.
    The output never passes through fp16, so a sum beyond its range is kept."""
    rows = half.reshape(-1, half.shape[-1])
    if half.device.type == "cuda":
        out = torch.mm(rows, weight.t(), out_dtype=torch.float32)
    else:  # the same products (fp16 numbers are exact in float32), summed in float32
        out = torch.mm(rows.float(), weight.float().t())
    if bias is not None:
        out += bias.to(torch.float32)
    return out.to(dtype).reshape(*half.shape[:-1], weight.shape[0])


class _CastInputs:
    """The last input cast for a GEMM, kept for the layers that read the same tensor next (q/k/v, gate/up): one
    conversion kernel per group instead of one per layer."""

    def __init__(self) -> None:
        self._last: tuple[torch.Tensor, torch.dtype, torch.Tensor] | None = None

    def of(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        last = self._last
        if last is not None and last[0] is x and last[1] == dtype:
            return last[2]
        cast = float16_input(x) if dtype == torch.float16 and x.dtype != torch.float16 else x.to(dtype)
        self._last = (x, dtype, cast)
        return cast

    def clear(self) -> None:
        self._last = None


def float16_products_available(device: torch.device) -> bool:
    """Whether `float16_linear` runs on `device`: on CUDA it needs torch's fp16 GEMM with a float32 output
    (`torch.mm`'s out_dtype); elsewhere it multiplies the fp16 numbers in float32."""
    if device.type != "cuda":
        return True
    try:
        ones = torch.ones(16, 16, dtype=torch.float16, device=device)
        return torch.mm(ones, ones, out_dtype=torch.float32).dtype == torch.float32
    except (RuntimeError, TypeError, NotImplementedError):
        return False


class TensorCoreLinears:
    """Inside `active()`, the model's bitsandbytes linears compute inputs of MIN_ROWS rows or more as one GEMM
    (`gemm_dtype`; float32 in TF32) on their dequantised weights. CUDA only; elsewhere nothing changes."""

    def __init__(
        self,
        model: Any,
        float32_gemms: Mapping[str, torch.dtype] | None = None,
        exact_sums: bool = False,
        any_device: bool = False,
    ) -> None:
        """`float32_gemms`: module-name prefix -> GEMM dtype for the float32-compute layers under it
        (`float32_gemm_of`; e.g. {"model.vision_model": torch.bfloat16}); the rest multiply in TF32. fp16 needs
        `float16_products_available`, else those layers stay in TF32. `exact_sums`: bf16 and fp16 GEMMs reduce
        split-K partial sums in float32 (cuBLAS may otherwise reduce them in the operands' dtype). `any_device`: on the
        CPU too (tests: the same forwards, no tensor cores)."""
        classes = bitsandbytes_linears() or ()
        on_cuda = any_device or getattr(model, "device", torch.device("cpu")).type == "cuda"
        named = [(n, m) for n, m in model.named_modules() if classes and isinstance(m, classes)] if on_cuda else []
        self.modules = [m for _, m in named]
        gemms = dict(float32_gemms or {})
        if named and torch.float16 in gemms.values() and not float16_products_available(model.device):
            gemms = {prefix: torch.float32 if d == torch.float16 else d for prefix, d in gemms.items()}
        self._float32_gemm = {id(m): float32_gemm_of(n, gemms) for n, m in named}
        self.exact_sums = exact_sums
        self._inputs = _CastInputs()

    @contextmanager
    def active(self) -> Iterator[None]:
        if not self.modules:
            yield
            return
        replacements = [
            (module, self._forward_of(module, current_forward(module), self._float32_gemm[id(module)]))
            for module in self.modules
        ]
        matmul = torch.backends.cuda.matmul
        saved_flags = (
            matmul.allow_tf32,
            matmul.allow_bf16_reduced_precision_reduction,
            matmul.allow_fp16_reduced_precision_reduction,
        )
        matmul.allow_tf32 = True
        if self.exact_sums:
            matmul.allow_bf16_reduced_precision_reduction = False
            matmul.allow_fp16_reduced_precision_reduction = False
        try:
            with replaced_forwards(replacements):
                yield
        finally:
            (
                matmul.allow_tf32,
                matmul.allow_bf16_reduced_precision_reduction,
                matmul.allow_fp16_reduced_precision_reduction,
            ) = saved_flags
            self._inputs.clear()

    def _forward_of(self, module: Any, own: Any, float32_gemm: torch.dtype) -> Any:
        inputs = self._inputs

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if x.numel() // x.shape[-1] < MIN_ROWS:
                return own(x, *args, **kwargs)
            dtype = gemm_dtype(module, x.dtype, float32_gemm)
            weight = dequantized_weight(module, dtype)
            return tensor_core_product(inputs.of(x, dtype), weight, module.bias, x.dtype)

        return forward


def tensor_core_product(
    cast: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """cast @ weight.T (+ bias) in the weight's dtype (fp16: `float16_linear`), returned in `dtype`."""
    if weight.dtype == torch.float16 and dtype != torch.float16:
        return float16_linear(cast, weight, bias, dtype)
    bias = None if bias is None else bias.to(weight.dtype)
    return torch.nn.functional.linear(cast, weight, bias).to(dtype)
