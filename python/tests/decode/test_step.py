"""The decode step's logits: float32, contiguous, the head's own result; on the CPU the head's forward (where the
worker's Triton kernels run, the batch-invariant matmul: tests/kernels/compile_cases.py compiles it at the lm_head's
shape)."""

from __future__ import annotations

import pytest
import torch

from idefics2_worker.decode.step import lm_head_logits


@pytest.mark.parametrize("rows", [1, 3, 8, 16])
@pytest.mark.parametrize("vocab", [37, 40])
def test_the_logits_are_the_heads(rows: int, vocab: int) -> None:
    torch.manual_seed(rows + vocab)
    head = torch.nn.Linear(64, vocab, bias=False).to(torch.bfloat16)
    x = torch.randn(rows, 64).to(torch.bfloat16)
    logits = lm_head_logits(head, x)
    assert logits.dtype == torch.float32
    assert logits.shape == (rows, vocab)
    assert logits.is_contiguous()
    exact = x.double() @ head.weight.double().t()
    # One bf16 rounding of a float32 sum.
    torch.testing.assert_close(logits.double(), exact, rtol=2**-7, atol=1e-2)


def test_on_the_cpu_the_heads_forward_runs() -> None:
    head = torch.nn.Linear(64, 37, bias=False).to(torch.bfloat16)
    calls: list[torch.Size] = []
    plain = head.forward
    head.forward = lambda x: calls.append(x.shape) or plain(x)  # type: ignore[method-assign]
    lm_head_logits(head, torch.randn(8, 64).to(torch.bfloat16))
    assert calls == [torch.Size([8, 64])]
