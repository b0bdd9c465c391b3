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
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..kernels import four_bit_dequantize, triton_support
from ..kernels.int8_dequantize import int8_dequantize, row_scales_of
from ..request.quantized_layers import bitsandbytes_linears

# Below this many rows a GEMM on dequantised weights reads more than the layer's own kernel: decode stays as it is.
MIN_ROWS = 16
_TENSOR_CORE_DTYPES = (torch.bfloat16, torch.float16)


def dequantized_weight(module: Any, dtype: torch.dtype) -> torch.Tensor:
    """The layer's weight as a dense [out, in] tensor of `dtype`: what its quantized form stands for."""
    weight = module.weight
    state = getattr(weight, "quant_state", None)
    if state is not None:
        if triton_support.available(weight.device) and four_bit_dequantize.supported(state):
            return four_bit_dequantize.four_bit_dequantize(weight.data, state, dtype)
        from bitsandbytes.functional import dequantize_4bit

        if state.dtype != dtype:
            # Dequantised in the GEMM's dtype directly, as bitsandbytes' gemm_4bit does for a float32 input: the
            # model's dtype (bf16) would round the weights first and cost a copy per layer (46 ms of a 4-bit prefill).
            state = copy.copy(state)
            state.dtype = dtype
        return dequantize_4bit(weight.data, state)
    # LLM.int8(): row-wise absmax scaling, CB / 127 * SCB; the state holds them once the layer has run.
    quantized = module.state.CB if getattr(module.state, "CB", None) is not None else weight.CB
    scales = module.state.SCB if getattr(module.state, "SCB", None) is not None else weight.SCB
    if triton_support.available(quantized.device):
        return int8_dequantize(quantized, scales, dtype, _row_scales(module, scales))
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


def gemm_dtype(module: Any, activations: torch.dtype, bf16_for_float32: bool) -> torch.dtype:
    """A 4-bit layer that computes in float32 (the blog's config) multiplies in float32 with TF32 allowed, on weights
    dequantised in float32 as bitsandbytes' own forward has them; other layers (int8, 4-bit in bf16/fp16) in the
    activations' dtype."""
    if getattr(module, "compute_dtype", None) == torch.float32 and not bf16_for_float32:
        return torch.float32
    return activations if activations in _TENSOR_CORE_DTYPES else torch.float32


class TensorCoreLinears:
    """Inside `active()`, the model's bitsandbytes linears compute inputs of MIN_ROWS rows or more as one GEMM
    (`gemm_dtype`; float32 in TF32) on their dequantised weights. CUDA only; elsewhere nothing changes."""

    def __init__(self, model: Any, bf16_for_float32: bool | str = False, exact_bf16_sums: bool = False) -> None:
        """`bf16_for_float32`: False, True (every float32-compute layer in bf16) or a module-name prefix (those
        under it only, e.g. "model.vision_model"); `exact_bf16_sums`: bf16 GEMMs reduce split-K partial sums in
        float32 (cuBLAS may otherwise reduce them in bf16)."""
        classes = bitsandbytes_linears() or ()
        on_cuda = getattr(model, "device", torch.device("cpu")).type == "cuda"
        named = [(n, m) for n, m in model.named_modules() if classes and isinstance(m, classes)] if on_cuda else []
        self.modules = [m for _, m in named]
        self._bf16 = {
            id(m): bf16_for_float32 is True or (isinstance(bf16_for_float32, str) and n.startswith(bf16_for_float32))
            for n, m in named
        }
        self.exact_bf16_sums = exact_bf16_sums

    @contextmanager
    def active(self) -> Iterator[None]:
        if not self.modules:
            yield
            return
        # Set in each module's __dict__, as `module.forward = ...` would, without nn.Module.__setattr__'s checks: ~600
        # layers per prefill, and the host time the GPU waits on (scripts/gpu/prefill_timeline.py).
        saved = [(module, module.__dict__.get("forward")) for module in self.modules]
        for module, previous in saved:
            module.__dict__["forward"] = self._forward_of(module, previous, self._bf16[id(module)])
        matmul = torch.backends.cuda.matmul
        tf32, reduced = matmul.allow_tf32, matmul.allow_bf16_reduced_precision_reduction
        matmul.allow_tf32 = True
        if self.exact_bf16_sums:
            matmul.allow_bf16_reduced_precision_reduction = False
        try:
            yield
        finally:
            matmul.allow_tf32, matmul.allow_bf16_reduced_precision_reduction = tf32, reduced
            for module, previous in saved:
                if previous is None:
                    del module.__dict__["forward"]
                else:
                    module.__dict__["forward"] = previous

    @staticmethod
    def _forward_of(module: Any, previous: Any, bf16_for_float32: bool) -> Any:
        own = previous if previous is not None else type(module).forward.__get__(module)

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if x.numel() // x.shape[-1] < MIN_ROWS:
                return own(x, *args, **kwargs)
            dtype = gemm_dtype(module, x.dtype, bf16_for_float32)
            weight = dequantized_weight(module, dtype)
            bias = None if module.bias is None else module.bias.to(dtype)
            return torch.nn.functional.linear(x.to(dtype), weight, bias).to(x.dtype)

        return forward
