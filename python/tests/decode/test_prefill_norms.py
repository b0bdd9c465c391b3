"""The prefill's fused RMSNorms take the text model's norms for a `with` block, and only there (their values against
the modules' own: tests/kernels/kernel_cases.py, under Triton's interpreter)."""

from __future__ import annotations

from typing import Any

import torch
from conftest import TINY_MODEL

from idefics2_worker.decode.prefill import PrefillPlan
from idefics2_worker.decode.prefill_linears import TensorCoreLinears
from idefics2_worker.decode.prefill_norms import FusedNorms


def load() -> Any:
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(str(TINY_MODEL)).eval()


def test_the_text_models_norms_are_taken_and_given_back() -> None:
    model = load()
    text = model.model.text_model
    norms = [n for layer in text.layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]
    fused = FusedNorms(model, any_device=True)
    assert {id(m) for m in fused.modules} == {id(m) for m in [*norms, text.norm]}
    perceiver_norm = model.model.connector.perceiver_resampler.norm
    own = text.layers[0].input_layernorm.forward
    with fused.active():
        assert all("forward" in m.__dict__ for m in fused.modules)
        assert "forward" not in perceiver_norm.__dict__
    assert all("forward" not in m.__dict__ for m in fused.modules)
    assert text.layers[0].input_layernorm.forward == own


def test_an_instances_own_forward_is_back_after_the_block() -> None:
    model = load()
    norm = model.model.text_model.norm
    patched = norm.forward
    norm.forward = patched  # e.g. a hook library's wrapper on the instance
    with FusedNorms(model, any_device=True).active():
        assert norm.__dict__["forward"] is not patched
    assert norm.__dict__["forward"] is patched


def test_off_cuda_nothing_is_replaced_and_the_cpu_plan_has_no_fused_norms() -> None:
    model = load()
    assert FusedNorms(model).modules == []
    assert PrefillPlan.fastest(model).norms is None


def test_a_plans_module_context_enters_its_norms_beside_its_linears() -> None:
    model = load()
    plan = PrefillPlan(linears=TensorCoreLinears(model, any_device=True), norms=FusedNorms(model, any_device=True))
    norm = model.model.text_model.norm
    with torch.inference_mode(), plan.module_context():
        assert "forward" in norm.__dict__
    assert "forward" not in norm.__dict__
