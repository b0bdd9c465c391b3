"""Attention kernel choice: restricted only for SDPA models on CUDA."""

from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace

import torch

from idefics2_worker.engine.attention import fastest_attention


def _model(device: str, implementation: str) -> SimpleNamespace:
    return SimpleNamespace(device=torch.device(device), config=SimpleNamespace(_attn_implementation=implementation))


def test_a_cpu_model_keeps_pytorchs_own_choice() -> None:
    assert isinstance(fastest_attention(_model("cpu", "sdpa")), nullcontext)


def test_an_eager_cuda_model_is_left_alone() -> None:
    assert isinstance(fastest_attention(_model("cuda", "eager")), nullcontext)


def test_an_sdpa_cuda_model_rules_out_cudnn_attention() -> None:
    context = fastest_attention(_model("cuda", "sdpa"))
    assert not isinstance(context, nullcontext)
    with context:
        from torch.nn.attention import (
            SDPBackend,
            _cur_sdpa_kernel_backends,  # type: ignore[attr-defined]
        )

        backends = set(_cur_sdpa_kernel_backends())
    assert SDPBackend.CUDNN_ATTENTION not in backends
    assert SDPBackend.FLASH_ATTENTION in backends
