"""A prefill's dequantised weights are the numbers bitsandbytes' own forward multiplies by."""

from __future__ import annotations

import torch
from quantized_layers import eight_bit_layer, four_bit_layer

from idefics2_worker.decode.prefill_linears import dequantized_weight


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
