"""bitsandbytes' quantized linears, computed so that a CUDA graph can capture them, and fast at 1-8 rows.

LLM.int8() (8-bit) finds the input's outlier columns with `argwhere`, a shape known only on the host, so its
forward cannot be captured. Here it is computed per row, as bitsandbytes does for a batch of one: the input is
cast to float16; elements with |x| ≥ threshold are outliers, left out of the row's absmax and of the int8
product; the int8 product is summed exactly and dequantised as bitsandbytes does; the outliers' product with
the dequantised weight is added. Instead of gathering the outlier columns, the outliers are kept in a dense
row that is zero elsewhere, so shapes never depend on the data. On CUDA with Triton the product is one kernel
(`int8_gemv`); elsewhere bitsandbytes' int8 ops plus a dense outlier product. 4-bit layers capture as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from . import int8_gemv

_INV_127 = 7.874015718698502e-3  # bitsandbytes' int8_vectorwise_dequant constant


def _eight_bit_linear() -> Any:
    try:
        import bitsandbytes as bnb
    except Exception:  # any import failure means there are no 8-bit layers to replace
        return None
    return bnb.nn.Linear8bitLt


class _QuantizedInput:
    """The int8 form of a layer input (computed once for q/k/v and for gate/up, which read the same input)."""

    def __init__(self, source: torch.Tensor, threshold: float) -> None:
        rows = source.reshape(-1, source.shape[-1])
        half = rows.to(torch.float16)
        magnitude = half.abs()
        if threshold > 0.0:
            outlier = magnitude >= threshold
            self.stats = magnitude.masked_fill(outlier, 0).amax(dim=1).float()
            scaled = half.masked_fill(outlier, 0).float() * (127.0 / self.stats[:, None])
            self.outliers: torch.Tensor | None = rows.float() * outlier
        else:
            self.stats = magnitude.amax(dim=1).float()
            scaled = half.float() * (127.0 / self.stats[:, None])
            self.outliers = None
        self.quantized = torch.round(scaled).to(torch.int8)


class DecodeLinears:
    """Swaps the text model's 8-bit linears for the capturable form inside `capturable()`."""

    def __init__(self, model: Any) -> None:
        eight_bit = _eight_bit_linear()
        modules = [*model.model.text_model.modules(), model.lm_head]
        self.kernels = int8_gemv.available(model.device)
        self.eight_bit = [m for m in modules if eight_bit is not None and isinstance(m, eight_bit)]
        self._last: tuple[torch.Tensor, _QuantizedInput] | None = None

    @contextmanager
    def capturable(self) -> Iterator[None]:
        for module in self.eight_bit:
            if module.weight.CB is not None:
                module.init_8bit_state()
            module.forward = self._forward_of(module)
        try:
            yield
        finally:
            self._last = None
            for module in self.eight_bit:
                del module.forward

    def _forward_of(self, module: Any) -> Any:
        def forward(x: torch.Tensor) -> torch.Tensor:
            return self._eight_bit(module, x)

        return forward

    def _quantize(self, x: torch.Tensor, threshold: float) -> _QuantizedInput:
        if self._last is not None and self._last[0] is x:
            return self._last[1]
        quantized = _QuantizedInput(x, threshold)
        self._last = (x, quantized)
        return quantized

    def _eight_bit(self, module: Any, x: torch.Tensor) -> torch.Tensor:
        state = module.state
        bias = module.bias
        if bias is not None and bias.dtype != x.dtype:
            bias = bias.to(x.dtype)
        quantized = self._quantize(x, float(state.threshold))
        if self.kernels:
            outliers = quantized.outliers
            if outliers is None:
                outliers = torch.zeros(quantized.quantized.shape, dtype=torch.float32, device=x.device)
            out = int8_gemv.eight_bit_gemv(quantized.quantized, outliers, state.CB, quantized.stats, state.SCB, x.dtype)
            if bias is not None:
                out = out + bias
        else:
            out = torch.ops.bitsandbytes.int8_scaled_mm.default(
                quantized.quantized, state.CB, quantized.stats, state.SCB, bias=bias, dtype=x.dtype
            )
            if quantized.outliers is not None:
                weights = (state.CB.float() * state.SCB[:, None] * _INV_127).to(x.dtype)
                out = out.addmm(quantized.outliers.to(x.dtype), weights.t())
        return out.reshape(*x.shape[:-1], out.shape[-1])
