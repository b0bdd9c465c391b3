"""bitsandbytes' LLM.int8() linear, computed so that a CUDA graph can capture it.

bitsandbytes finds the outlier columns of the input with `argwhere` (a shape known only on the host), so its
8-bit forward cannot be captured. This computes the same function per row, as bitsandbytes does for a batch
of one: inputs cast to float16; elements with |x| ≥ threshold are outliers, left out of the row's absmax and
of the int8 product; the int8 product and its dequantisation are bitsandbytes' own ops; the outlier columns
are added back as `x[:, cols] @ dequant(W[:, cols]).T` in the input's dtype. The outlier columns are gathered
into a fixed number of places (`capacity`); a step that has more sets `overflow`, and the caller then reruns
that step with bitsandbytes' own forward and raises the capacity.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

_INV_127 = 7.874015718698502e-3  # bitsandbytes' int8_vectorwise_dequant constant


def _int8_linear_type() -> Any:
    try:
        import bitsandbytes as bnb
    except Exception:  # any import failure means there is no 8-bit layer to replace
        return None
    return bnb.nn.Linear8bitLt


class _QuantizedInput:
    def __init__(self, source: torch.Tensor, threshold: float, capacity: int) -> None:
        rows = source.reshape(-1, source.shape[-1])
        half = rows.to(torch.float16)
        magnitude = half.abs()
        self.rows = rows
        if threshold > 0.0:
            outlier = magnitude >= threshold
            self.stats = magnitude.masked_fill(outlier, 0).amax(dim=1).float()
            scaled = half.masked_fill(outlier, 0).float() * (127.0 / self.stats[:, None])
            columns = outlier.any(dim=0)
            self.count = columns.sum()
            self.columns = torch.topk(columns.to(torch.float16), min(capacity, columns.numel())).indices
            self.outlier_values = rows[:, self.columns] * outlier[:, self.columns]
        else:
            self.stats = magnitude.amax(dim=1).float()
            scaled = half.float() * (127.0 / self.stats[:, None])
            self.count = None
        self.quantized = torch.round(scaled).to(torch.int8)


class Int8DecodeLinears:
    """Swaps the text model's 8-bit linears to the capturable forward inside `capturable()`."""

    def __init__(self, model: Any, capacity: int = 8) -> None:
        linear_type = _int8_linear_type()
        text = model.model.text_model
        self.modules = [m for m in text.modules() if linear_type is not None and isinstance(m, linear_type)]
        self.modules += [m for m in (model.lm_head,) if linear_type is not None and isinstance(m, linear_type)]
        self.capacity = capacity
        self.overflow = torch.zeros((), dtype=torch.long, device=model.device)
        self._last: tuple[torch.Tensor, _QuantizedInput] | None = None

    @property
    def active(self) -> bool:
        return bool(self.modules)

    @contextmanager
    def capturable(self) -> Iterator[None]:
        if not self.modules:
            yield
            return
        self.overflow.zero_()
        for module in self.modules:
            if module.weight.CB is not None:
                module.init_8bit_state()
            module.forward = self._forward_for(module)
        try:
            yield
        finally:
            self._last = None
            for module in self.modules:
                del module.forward

    def overflowed(self) -> bool:
        return bool(self.modules) and int(self.overflow) > self.capacity

    def _forward_for(self, module: Any) -> Any:
        def forward(x: torch.Tensor) -> torch.Tensor:
            return self._forward(module, x)

        return forward

    def _quantize(self, x: torch.Tensor, threshold: float) -> _QuantizedInput:
        # q/k/v (and gate/up) read the same input: quantise it once.
        if self._last is not None and self._last[0] is x:
            return self._last[1]
        quantized = _QuantizedInput(x, threshold, self.capacity)
        if quantized.count is not None:
            torch.maximum(self.overflow, quantized.count, out=self.overflow)
        self._last = (x, quantized)
        return quantized

    def _forward(self, module: Any, x: torch.Tensor) -> torch.Tensor:
        state = module.state
        bias = module.bias
        if bias is not None and bias.dtype != x.dtype:
            bias = bias.to(x.dtype)
        quantized = self._quantize(x, float(state.threshold))
        out = torch.ops.bitsandbytes.int8_scaled_mm.default(
            quantized.quantized, state.CB, quantized.stats, state.SCB, bias=bias, dtype=x.dtype
        )
        if quantized.count is not None:
            weights = (state.CB[:, quantized.columns].float() * state.SCB[:, None] * _INV_127).to(x.dtype)
            out = out.addmm(quantized.outlier_values, weights.t())
        return out.reshape(*x.shape[:-1], out.shape[-1])
