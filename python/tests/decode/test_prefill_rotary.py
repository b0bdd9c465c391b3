"""The prefill's fused rotary embedding takes the text attention's function for a `with` block, and only there (its
values against transformers' own: tests/kernels/kernel_cases.py, under Triton's interpreter)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import TINY_MODEL
from transformers.models.mistral import modeling_mistral

from idefics2_worker.decode.prefill import PrefillPlan
from idefics2_worker.decode.prefill_rotary import FusedRotary
from idefics2_worker.kernels import step_kernels


def load() -> Any:
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(str(TINY_MODEL)).eval()


def test_the_text_attentions_function_is_taken_for_the_block_and_given_back_even_after_an_error() -> None:
    model = load()
    own = modeling_mistral.apply_rotary_pos_emb
    fused = FusedRotary(model, any_device=True)
    assert fused.module is modeling_mistral
    with fused.active():
        assert modeling_mistral.apply_rotary_pos_emb is not own
        assert modeling_mistral.apply_rotary_pos_emb.__wrapped__ is own
    assert modeling_mistral.apply_rotary_pos_emb is own
    with pytest.raises(RuntimeError), fused.active():
        raise RuntimeError("a prefill that fails")
    assert modeling_mistral.apply_rotary_pos_emb is own


def test_off_cuda_nothing_is_taken_and_the_cpu_plan_has_no_fused_rotary() -> None:
    model = load()
    assert FusedRotary(model).module is None
    assert PrefillPlan.fastest(model).rotary is None
    with FusedRotary(model).active():
        assert not hasattr(modeling_mistral.apply_rotary_pos_emb, "__wrapped__")


def test_a_plans_module_context_enters_its_rotary() -> None:
    model = load()
    plan = PrefillPlan(rotary=FusedRotary(model, any_device=True))
    with torch.inference_mode(), plan.module_context():
        assert hasattr(modeling_mistral.apply_rotary_pos_emb, "__wrapped__")
    assert not hasattr(modeling_mistral.apply_rotary_pos_emb, "__wrapped__")


def _heads(product: torch.Tensor, first: int, count: int, dim: int) -> torch.Tensor:
    batch, length = product.shape[:2]
    return product[..., first * dim : (first + count) * dim].view(batch, length, count, dim).transpose(1, 2)


@pytest.mark.parametrize(
    ("case", "applies"),
    [
        ("a batch's column slices of one product, cos shared", True),
        ("cos per row", True),
        ("queries copied to [batch, heads, positions, dim]", False),
        ("cos in another dtype", False),
        ("cos for another length", False),
        ("an odd head dim", False),
    ],
)
def test_the_kernel_takes_the_prefills_layout_and_leaves_the_rest_to_the_module(case: str, applies: bool) -> None:
    batch, length, heads, kv_heads, dim = 2, 5, 4, 2, 8
    odd = case == "an odd head dim"
    dim += odd
    product = torch.randn(batch, length, (heads + 2 * kv_heads) * dim, dtype=torch.bfloat16)
    query, key = _heads(product, 0, heads, dim), _heads(product, heads, kv_heads, dim)
    cos = torch.randn(1 if "shared" in case else batch, length, dim, dtype=torch.bfloat16)
    if case.startswith("queries copied"):
        query = query.contiguous()
    if case == "cos in another dtype":
        cos = cos.float()
    if case == "cos for another length":
        cos = cos[:, 1:]
    assert step_kernels.prefill_rotary_applies(query, key, cos, cos.clone()) is applies
