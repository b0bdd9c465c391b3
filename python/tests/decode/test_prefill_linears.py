"""A prefill's dequantised weights are the numbers bitsandbytes' own forward multiplies by."""

from __future__ import annotations

import torch
from quantized_layers import eight_bit_layer, four_bit_layer

from idefics2_worker.decode.prefill_linears import TensorCoreLinears, dequantized_weight


def test_a_four_bit_weight_is_dequantised_in_the_gemms_dtype_without_a_rounding_on_the_way() -> None:
    layer = four_bit_layer(128, 64, dtype=torch.bfloat16)  # a bf16 model's layer: its quant state says bfloat16
    assert layer.weight.quant_state.dtype == torch.bfloat16
    full = dequantized_weight(layer, torch.float32)
    half = dequantized_weight(layer, torch.bfloat16)
    assert full.dtype == torch.float32
    assert half.dtype == torch.bfloat16
    assert full.shape == (64, 128)
    # The float32 weights are bitsandbytes' float32 dequantisation, finer than the bfloat16 ones they round to.
    assert torch.equal(full.to(torch.bfloat16), half)
    assert not torch.equal(full, half.float())
    assert layer.weight.quant_state.dtype == torch.bfloat16  # the layer's own state is left as it was
    rows = torch.randn(20, 128)
    with torch.inference_mode():
        ours = torch.nn.functional.linear(rows, full)
        theirs = _bitsandbytes_float32_forward(layer, rows)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5)


def _bitsandbytes_float32_forward(layer: torch.nn.Module, rows: torch.Tensor) -> torch.Tensor:
    import bitsandbytes as bnb

    return bnb.matmul_4bit(rows, layer.weight.t(), quant_state=layer.weight.quant_state)


def test_an_eight_bit_weight_is_its_row_scaled_int8_values() -> None:
    layer = eight_bit_layer(64, 32)
    weight = dequantized_weight(layer, torch.float32)
    expected = layer.weight.CB.float() * (layer.weight.SCB.float()[:, None] / 127.0)
    assert torch.equal(weight, expected)


def test_an_eight_bit_weight_in_bf16_is_the_float32_product_rounded_once() -> None:
    layer = eight_bit_layer(64, 32)
    weight = dequantized_weight(layer, torch.bfloat16)
    expected = (layer.weight.CB.float() * (layer.weight.SCB.float()[:, None] / 127.0)).to(torch.bfloat16)
    assert weight.dtype == torch.bfloat16
    assert torch.equal(weight, expected)


def test_an_eight_bit_layers_row_multipliers_are_made_once_for_its_scales() -> None:
    from idefics2_worker.decode.prefill_linears import _row_scales

    layer = eight_bit_layer(64, 32)
    scales = layer.weight.SCB
    first = _row_scales(layer, scales)
    assert torch.equal(first, scales.float() / 127.0)
    assert _row_scales(layer, scales) is first
    replaced = scales * 2  # new scales (a reloaded weight): new multipliers
    again = _row_scales(layer, replaced)
    assert again is not first
    assert torch.equal(again, replaced.float() / 127.0)


def test_a_plan_gives_each_float32_layer_the_dtype_of_its_longest_named_prefix() -> None:
    from idefics2_worker.decode.prefill_linears import float32_gemm_of

    plan = {"model.vision_model": torch.bfloat16, "": torch.float16}
    assert float32_gemm_of("model.vision_model.encoder.layers.0.mlp.fc1", plan) == torch.bfloat16
    assert float32_gemm_of("model.text_model.layers.0.mlp.down_proj", plan) == torch.float16
    assert float32_gemm_of("model.text_model.layers.0.mlp.down_proj", {"model.vision_model": torch.bfloat16}) == (
        torch.float32
    )
    assert float32_gemm_of("anything", {}) == torch.float32


def test_a_float16_product_saturates_its_inputs_and_keeps_sums_beyond_float16s_range() -> None:
    from idefics2_worker.decode.prefill_linears import FLOAT16_SATURATION, float16_input, float16_linear

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(20, 64, generator=generator).to(torch.bfloat16)
    x[3, 5] = 70000.0  # beyond fp16's 65,504: inf if cast as it is
    x[7] = 2048.0  # a row whose sums pass fp16's range
    weight = torch.randn(32, 64, generator=generator).to(torch.float16)
    weight[0] = 1.0
    bias = torch.randn(32, generator=generator)
    out = float16_linear(float16_input(x), weight, bias, torch.bfloat16)
    assert out.dtype == torch.bfloat16
    assert out.shape == (20, 32)
    assert torch.isfinite(out).all()
    expected_input = x.float().clamp(-FLOAT16_SATURATION, FLOAT16_SATURATION).half().float()
    expected = (expected_input @ weight.float().t() + bias).to(torch.bfloat16)
    assert torch.equal(out[3], expected[3])  # the saturated input, not inf
    beyond = torch.tensor(2048.0 * 64 + bias[0].item()).to(torch.bfloat16)  # ~131,072: far beyond fp16
    assert out[7, 0] == beyond
    assert torch.allclose(out.float(), expected.float(), rtol=1e-2, atol=1e-2)


def test_layers_that_read_the_same_input_share_one_cast_of_it() -> None:
    from idefics2_worker.decode.prefill_linears import FLOAT16_SATURATION, _CastInputs

    inputs = _CastInputs()
    x = torch.full((4, 8), 70000.0, dtype=torch.bfloat16)
    half = inputs.of(x, torch.float16)
    assert half.dtype == torch.float16
    assert torch.all(half == FLOAT16_SATURATION)
    assert inputs.of(x, torch.float16) is half  # k and v after q: no second conversion
    assert inputs.of(x.clone(), torch.float16) is not half  # another tensor, even with the same numbers
    assert inputs.of(x, torch.float32).dtype == torch.float32
    assert inputs.of(x, torch.bfloat16) is x
    kept = inputs.of(x, torch.float16)
    inputs.clear()
    assert inputs.of(x, torch.float16) is not kept


def test_a_prefill_with_fp16_gemms_for_the_float32_layers_keeps_the_plain_prefills_answer() -> None:
    # The tiny model in 4-bit (the blog's float32 compute), its bitsandbytes layers computed as the worker's plan
    # computes them on a GPU (fp16 operands, float32 sums), here on the CPU's arithmetic.
    import threading

    from conftest import load_params
    from demo_inputs import demo_images, demo_messages

    from idefics2_worker.decode.prefill import PrefillPlan, prefill
    from idefics2_worker.engine.engine import Engine
    from idefics2_worker.protocol.params import parse_load

    engine = Engine()
    engine.load(parse_load(load_params("4bit")), threading.Event(), lambda *_: None)
    model, processor = engine.loaded.model, engine.loaded.processor
    prompt = processor.apply_chat_template(demo_messages(), add_generation_prompt=True)
    inputs = processor(text=prompt, images=demo_images(), return_tensors="pt")
    linears = TensorCoreLinears(model, {"": torch.float16}, any_device=True)
    assert linears.modules  # every 4-bit layer, vision tower and text model
    with torch.inference_mode():
        _, plain = prefill(model, inputs, PrefillPlan())
        _, fp16 = prefill(model, inputs, PrefillPlan(linears=linears))
    assert not torch.equal(fp16, plain)  # the layers did run another way
    torch.testing.assert_close(fp16, plain, rtol=0, atol=2e-2)
    assert torch.equal(fp16.argmax(-1), plain.argmax(-1))
