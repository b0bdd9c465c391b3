"""A layer's projections that read the same input (q, k and v; gate and up), one product each in a prefill.

The fast decoder joins each such group's weights for its step (`fused_projections`): the modules' weights become
views of one tensor. A prefill runs transformers' modules, which call the projections one by one on the same input,
and for a prompt's rows each call is a GEMM, at 8-bit behind a dequantisation kernel (`prefill_linears`). Admitting
eight short prompts together is bound by the host launching those kernels (docs/BENCHMARKS.md, H84, H85: the GPU
busy a fifth of the time). Inside `active()` the group's first module called on an input computes the whole group's
product over the joined weight, one dequantisation and one GEMM, and each module returns its own columns of it:
three fewer of each per layer (96 fewer GEMMs for idefics2-8b's 32 layers, and as many dequantisations at 8-bit).

Only where the host is the bound: up to `MOST_ROWS` rows. On an H200 (H86) grouping took 8 text prompts' admission
at 8-bit from 80.1 to 73.3 ms, but made the blog's one prefill of ~1,000 rows 1.4 ms (8-bit) and 1.8 ms (bf16)
slower: there the GPU's time counts, and each module's output is a strided slice of the group's, which the
elementwise kernels after it (SiLU product, rotary) read more slowly than a tensor of its own.

The weights are the same numbers; the GEMM is wider, so cuBLAS may pick another kernel and order a sum differently:
parity is judged as for every fast path (teacher-forced logits within the noise, scripts/gpu/gpu_parity.py). Groups
the step did not join (4-bit layers, which it packs for its own kernel; a model without the fast step) and inputs
of fewer than `MIN_ROWS` or more than `MOST_ROWS` rows run each module's forward as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from .fused_projections import JoinedWeights, joined_of
from .module_forwards import current_forward, replaced_forwards
from .prefill_linears import MIN_ROWS, dequantized_int8, gemm_dtype, tensor_core_product

# The most rows a grouped product takes (the module docstring): 8 short prompts are ~160, the blog's one ~1,000.
MOST_ROWS = 512


@dataclass
class _Outputs:
    """A group's product for one input, each module's columns until that module has taken them."""

    input: torch.Tensor
    parts: list[torch.Tensor | None]


class GroupedProjections:
    """Inside `active()`, the text model's joined q/k/v and gate/up groups (`joined_of`) compute inputs of MIN_ROWS to
    MOST_ROWS rows as one product per group. On CUDA (or anywhere with `any_device`, for the tests)."""

    def __init__(self, model: Any, any_device: bool = False) -> None:
        on = any_device or getattr(model, "device", torch.device("cpu")).type == "cuda"
        text = getattr(getattr(model, "model", None), "text_model", None)
        layers = getattr(text, "layers", None) if on else None
        self._candidates: list[Any] = []
        for layer in layers or []:
            attention, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
            self._candidates += [getattr(attention, "q_proj", None), getattr(mlp, "gate_proj", None)]
        self._held: dict[int, _Outputs] = {}

    def groups(self) -> list[JoinedWeights]:
        """The groups joined now: the step joins them when it is built, which may follow this object's making."""
        found = (joined_of(module) for module in self._candidates if module is not None)
        return [joined for joined in found if joined is not None]

    @contextmanager
    def active(self) -> Iterator[None]:
        replacements = [
            (module, self._forward_of(joined, index, current_forward(module)))
            for joined in self.groups()
            for index, module in enumerate(joined.modules)
        ]
        try:
            with replaced_forwards(replacements):
                yield
        finally:
            self._held.clear()

    def _forward_of(self, joined: JoinedWeights, index: int, own: Any) -> Any:
        key = id(joined)
        held = self._held

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if args or kwargs or not MIN_ROWS <= x.numel() // x.shape[-1] <= MOST_ROWS:
                return own(x, *args, **kwargs)
            outputs = held.get(key)
            if outputs is None or outputs.input is not x or outputs.parts[index] is None:
                outputs = _Outputs(x, list(self.product(joined, x).split(joined.sizes, dim=-1)))
                held[key] = outputs
            part = outputs.parts[index]
            outputs.parts[index] = None
            if all(p is None for p in outputs.parts):
                del held[key]  # every module has its columns: the product is not kept past them
            assert part is not None
            return part

        return forward

    def product(self, joined: JoinedWeights, x: torch.Tensor) -> torch.Tensor:
        """x @ the group's joined weight.T: each module's outputs side by side, in `joined.sizes`."""
        scales, row_scales = joined.scales, joined.row_scales
        if scales is None or row_scales is None:  # a dense group
            return torch.nn.functional.linear(x, joined.weight)
        dtype = gemm_dtype(joined.modules[0], x.dtype)
        weight = dequantized_int8(joined.weight, scales, dtype, lambda: row_scales)
        return tensor_core_product(x.to(dtype), weight, None, x.dtype)
