"""Which scaled-dot-product attention kernels generation may use."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any


def fastest_attention(model: Any) -> AbstractContextManager[Any]:
    """On CUDA, rule out cuDNN's attention for SDPA models; elsewhere change nothing.

    PyTorch picks cuDNN's attention on Hopper, which re-plans as the KV cache grows each step and made the
    reference's decode CPU-bound (measured on an H100 through the reference's generate(): 17 tok/s with cuDNN
    chosen, 47 with flash). Flash, memory-efficient and math attention compute the same function; the CPU
    path, where the package's token-parity tests run, never had cuDNN to pick.
    """
    if model.device.type != "cuda" or getattr(model.config, "_attn_implementation", None) != "sdpa":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
