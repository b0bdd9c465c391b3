"""The text model's RMSNorms as one Triton kernel each during a prefill.

MistralRMSNorm's forward is five torch kernels (the float32 cast, the square, the mean, the rsqrt product, the
weight product), each a pass over the prompt's rows: ~2.9 ms for a prefill's 65 norms on an H200
(scripts/gpu/prefill_timeline.py, docs/BENCHMARKS.md). The decode step's norm kernel (`step_kernels.add_rms_norm`,
without its add) computes the same function in one pass. Its sum of squares is ordered differently from torch's
mean, so a value may differ from the module's by a rounding step of the output (tests/kernels/kernel_cases.py), the
noise that the parity check allows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..kernels import step_kernels, triton_support
from .module_forwards import replaced_forwards


class FusedNorms:
    """Inside `active()`, the text model's RMSNorms run `step_kernels.add_rms_norm`. On CUDA devices that run the
    worker's Triton kernels (or anywhere with `any_device`, for the tests under Triton's interpreter); elsewhere
    nothing changes."""

    def __init__(self, model: Any, any_device: bool = False) -> None:
        on = any_device or triton_support.available(model.device)
        self.modules = [m for m in model.model.text_model.modules() if step_kernels.computes_norm(m)] if on else []

    @contextmanager
    def active(self) -> Iterator[None]:
        with replaced_forwards([(module, _forward_of(module)) for module in self.modules]):
            yield


def _forward_of(module: Any) -> Any:
    def forward(hidden: torch.Tensor) -> torch.Tensor:
        return step_kernels.add_rms_norm(hidden.contiguous(), None, module.weight, module.variance_epsilon)[1]

    return forward
