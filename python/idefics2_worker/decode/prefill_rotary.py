"""The text model's rotary embedding as one Triton kernel per layer during a prefill.

transformers' `apply_rotary_pos_emb` is ten torch kernels per layer (for the queries and again for the keys: the
cos product, rotate_half's negation and concatenation, the sin product, the sum), each launched from Python: ~320 of
a prefill's launches on idefics2-8b's 32 layers, while the prefill of a few short prompts is bound by the host's
launches (scripts/gpu/prefill_timeline.py, docs/BENCHMARKS.md). `step_kernels.prefill_rotary` computes the same
function for a layer's queries and keys in one launch, with the module code's roundings (each product and the sum
rounded to the inputs' dtype) and its results' layout, so the attention after it gets the same inputs.

The function is a global of the attention's module (modeling_mistral for Idefics2's text model), looked up at each
call: it is swapped there for the length of the prefill and put back after. Inputs it does not take
(`step_kernels.prefill_rotary_applies`) go to the module's own function.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..kernels import step_kernels, triton_support

FUNCTION = "apply_rotary_pos_emb"


class FusedRotary:
    """Inside `active()`, the text model's attention applies its rotary embedding with `step_kernels.prefill_rotary`.
    On CUDA devices that run the worker's Triton kernels (or anywhere with `any_device`, for the tests under Triton's
    interpreter); elsewhere nothing changes."""

    def __init__(self, model: Any, any_device: bool = False) -> None:
        on = any_device or triton_support.available(model.device)
        layers = getattr(model.model.text_model, "layers", None) or []
        module = sys.modules.get(type(layers[0].self_attn).__module__) if on and layers else None
        self.module = module if callable(getattr(module, FUNCTION, None)) else None

    @contextmanager
    def active(self) -> Iterator[None]:
        module = self.module
        if module is None:
            yield
            return
        own = getattr(module, FUNCTION)
        setattr(module, FUNCTION, _fused(own))
        try:
            yield
        finally:
            setattr(module, FUNCTION, own)


def _fused(own: Any) -> Any:
    def apply_rotary_pos_emb(
        q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if unsqueeze_dim != 1 or not step_kernels.prefill_rotary_applies(q, k, cos, sin):
            return own(q, k, cos, sin, unsqueeze_dim)
        return step_kernels.prefill_rotary(q, k, cos, sin)

    apply_rotary_pos_emb.__wrapped__ = own  # type: ignore[attr-defined]
    return apply_rotary_pos_emb
