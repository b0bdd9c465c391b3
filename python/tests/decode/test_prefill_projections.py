"""A prefill computes each joined q/k/v and gate/up group as one product, and every module still gets its own
outputs (CPU: dense layers, LLM.int8() layers through the torch dequantisation, the tiny model)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from conftest import TINY_MODEL
from demo_inputs import demo_images, demo_messages
from quantized_layers import eight_bit_layer
from torch.profiler import ProfilerActivity, profile

from idefics2_worker.decode.fused_projections import FusedProjection, joined_of
from idefics2_worker.decode.prefill import PrefillPlan, prefill, prefill_many
from idefics2_worker.decode.prefill_linears import MIN_ROWS, TensorCoreLinears
from idefics2_worker.decode.prefill_projections import MOST_ROWS, GroupedProjections


def one_layer_model(make: Any) -> torch.nn.Module:
    """A model shaped as the worker reads one (model.text_model.layers[i].self_attn / .mlp), of `make(inputs,
    outputs)` layers: q 48, k and v 16, gate and up 32 outputs, 64 inputs each."""
    attention, mlp, layer = torch.nn.Module(), torch.nn.Module(), torch.nn.Module()
    attention.q_proj, attention.k_proj, attention.v_proj = make(64, 48), make(64, 16), make(64, 16)
    mlp.gate_proj, mlp.up_proj = make(64, 32), make(64, 32)
    layer.self_attn, layer.mlp = attention, mlp
    text, inner, model = torch.nn.Module(), torch.nn.Module(), torch.nn.Module()
    text.layers = torch.nn.ModuleList([layer])
    inner.text_model = text
    model.model = inner
    return model


def dense(inputs: int, outputs: int) -> torch.nn.Linear:
    return torch.nn.Linear(inputs, outputs, bias=False)


def groups_of(model: torch.nn.Module) -> list[list[torch.nn.Module]]:
    layer = model.model.text_model.layers[0]
    attention, mlp = layer.self_attn, layer.mlp
    return [[attention.q_proj, attention.k_proj, attention.v_proj], [mlp.gate_proj, mlp.up_proj]]


def join(model: torch.nn.Module) -> None:
    """What the fast step does when it is built (DecodeStep: FusedProjection.of per group)."""
    for group in groups_of(model):
        assert FusedProjection.of(group, deterministic=False) is not None


def linear_calls(run: Any) -> tuple[Any, int]:
    """run()'s result and the GEMMs it ran (aten::linear or aten::mm at the top of the profiler's tree)."""
    with profile(activities=[ProfilerActivity.CPU]) as traced:
        result = run()
    names = ("aten::linear", "aten::mm", "aten::matmul")
    return result, sum(1 for e in traced.events() if e.name in names and e.cpu_parent is None)


def test_each_module_gets_its_own_columns_from_one_product_per_group() -> None:
    torch.manual_seed(0)
    model = one_layer_model(dense)
    join(model)
    x = torch.randn(2, MIN_ROWS, 64)
    expected = [[module.weight.detach().clone() for module in group] for group in groups_of(model)]
    grouped = GroupedProjections(model, any_device=True)
    with torch.inference_mode(), grouped.active():
        outputs, gemms = linear_calls(lambda: [[module(x) for module in group] for group in groups_of(model)])
    assert gemms == 2  # one per group, where each module alone would run its own: 5
    for group_outputs, weights in zip(outputs, expected, strict=True):
        for out, weight in zip(group_outputs, weights, strict=True):
            torch.testing.assert_close(out, torch.nn.functional.linear(x, weight), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rows", [MIN_ROWS - 1, MOST_ROWS + 1])
def test_a_decode_steps_rows_and_a_long_prompts_take_each_modules_own_forward(rows: int) -> None:
    torch.manual_seed(0)
    model = one_layer_model(dense)
    join(model)
    q, k, v = groups_of(model)[0]
    x = torch.randn(1, rows, 64)
    with torch.inference_mode(), GroupedProjections(model, any_device=True).active():
        outputs, gemms = linear_calls(lambda: [q(x), k(x), v(x)])
    assert gemms == 3
    for module, out in zip((q, k, v), outputs, strict=True):
        torch.testing.assert_close(out, torch.nn.functional.linear(x, module.weight), rtol=1e-6, atol=1e-6)


def test_modules_called_on_other_inputs_or_twice_get_their_own_inputs_products() -> None:
    torch.manual_seed(0)
    model = one_layer_model(dense)
    join(model)
    q, k, v = groups_of(model)[0]
    x, y = torch.randn(MIN_ROWS, 64), torch.randn(MIN_ROWS, 64)
    with torch.inference_mode(), GroupedProjections(model, any_device=True).active():
        # k on another input between q's and v's: each answer is its own input's.
        mixed = [q(x), k(y), v(x), v(x)]
    for module, inp, out in zip((q, k, v, v), (x, y, x, x), mixed, strict=True):  # v asked twice: computed again
        torch.testing.assert_close(out, torch.nn.functional.linear(inp, module.weight), rtol=1e-6, atol=1e-6)


def test_modules_run_their_own_forward_again_after_and_nothing_is_held() -> None:
    model = one_layer_model(dense)
    join(model)
    grouped = GroupedProjections(model, any_device=True)
    q = groups_of(model)[0][0]
    with torch.inference_mode(), grouped.active():
        assert "forward" in q.__dict__
        q(torch.randn(MIN_ROWS, 64))  # k and v never take theirs
    assert "forward" not in q.__dict__
    assert grouped._held == {}


def test_groups_joined_after_the_plan_was_made_are_found_and_unjoined_ones_left_alone() -> None:
    model = one_layer_model(dense)
    grouped = GroupedProjections(model, any_device=True)  # the engine makes its plan before the step joins
    assert grouped.groups() == []
    with grouped.active():
        assert "forward" not in groups_of(model)[0][0].__dict__
    join(model)
    assert [list(g.modules) for g in grouped.groups()] == groups_of(model)
    assert joined_of(groups_of(model)[1][1]) is grouped.groups()[1]


def test_on_cpu_without_any_device_nothing_is_grouped() -> None:
    model = one_layer_model(dense)
    join(model)
    assert GroupedProjections(model).groups() == []


def test_eight_bit_groups_dequantise_their_joined_rows_once_and_give_each_layer_its_product() -> None:
    seeds = iter(range(1, 6))  # each layer its own weights, so that a module given another's columns shows
    model = one_layer_model(lambda inputs, outputs: eight_bit_layer(inputs, outputs, seed=next(seeds)))
    alone = copy.deepcopy(model)
    join(model)
    linears = TensorCoreLinears(model, any_device=True)
    x = torch.randn(MIN_ROWS, 64)
    with torch.inference_mode():
        with TensorCoreLinears(alone, any_device=True).active():
            expected = [[module(x) for module in group] for group in groups_of(alone)]
        with linears.active(), GroupedProjections(model, any_device=True).active():
            outputs, gemms = linear_calls(lambda: [[module(x) for module in group] for group in groups_of(model)])
    assert gemms == 2
    for group_outputs, group_expected in zip(outputs, expected, strict=True):
        for out, theirs in zip(group_outputs, group_expected, strict=True):
            # The same dequantised weights; the wider GEMM may order its float32 sums another way.
            torch.testing.assert_close(out, theirs, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_joined() -> tuple[Any, Any, Any]:
    """The tiny model as loaded, a copy of it with each layer's groups joined, and its processor."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from idefics2_worker.engine.compat import expose_pil_image_processor

    expose_pil_image_processor()
    processor = AutoProcessor.from_pretrained(str(TINY_MODEL))
    model = AutoModelForImageTextToText.from_pretrained(str(TINY_MODEL)).eval()
    joined = copy.deepcopy(model)
    for layer in joined.model.text_model.layers:
        attention, mlp = layer.self_attn, layer.mlp
        assert FusedProjection.of([attention.q_proj, attention.k_proj, attention.v_proj], False) is not None
        assert FusedProjection.of([mlp.gate_proj, mlp.up_proj], False) is not None
    return model, joined, processor


def test_the_tiny_models_prefill_with_grouped_projections_gives_its_logits_and_greedy_token(
    tiny_joined: tuple[Any, Any, Any],
) -> None:
    model, joined, processor = tiny_joined
    prompt = processor.apply_chat_template(demo_messages(), add_generation_prompt=True)
    inputs = processor(text=prompt, images=demo_images(), return_tensors="pt")
    layers = len(model.model.text_model.layers)
    plan = PrefillPlan(projections=GroupedProjections(joined, any_device=True))
    with torch.inference_mode():
        (_, plain), before = linear_calls(lambda: prefill(model, inputs, PrefillPlan()))
        (cache, grouped), after = linear_calls(lambda: prefill(joined, inputs, plan))
    assert before - after == 3 * layers  # q/k/v: 3 GEMMs to 1, gate/up: 2 to 1, in every layer
    torch.testing.assert_close(grouped, plain, rtol=1e-5, atol=1e-5)
    assert torch.equal(grouped.argmax(-1), plain.argmax(-1))
    assert cache.get_seq_length() == inputs["input_ids"].shape[1]


def test_prompts_prefilled_together_with_grouped_projections_get_their_own_logits(
    tiny_joined: tuple[Any, Any, Any],
) -> None:
    model, joined, processor = tiny_joined

    def text(words: str) -> Any:
        messages = [{"role": "user", "content": [{"type": "text", "text": words}]}]
        return processor(text=processor.apply_chat_template(messages, add_generation_prompt=True), return_tensors="pt")

    prompts = [text("Write a long story about a city by the sea."), text("Name three colours."), text("Why?")]
    plan = PrefillPlan(projections=GroupedProjections(joined, any_device=True))
    with torch.inference_mode():
        _, plain, _ = prefill_many(model, prompts, PrefillPlan())
        _, grouped, lengths = prefill_many(joined, prompts, plan)
    assert lengths == [int(p["input_ids"].shape[1]) for p in prompts]
    torch.testing.assert_close(grouped, plain, rtol=1e-5, atol=1e-5)
    assert torch.equal(grouped.argmax(-1), plain.argmax(-1))
