"""Workarounds for the pinned libraries: each does its narrow job and nothing more."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import TINY_MODEL
from quantized_layers import eight_bit_layer, four_bit_layer

from idefics2_worker.engine.compat import (
    _DropInt8CastNotice,
    int8_quantized_where_loaded,
    portable_cpu_four_bit,
    quiet_int8_cast_notice,
)


def test_the_per_call_int8_cast_notice_is_dropped_and_other_bitsandbytes_logs_pass(
    caplog: pytest.LogCaptureFixture,
) -> None:
    layer = eight_bit_layer(64, 16)
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    for installed in [f for f in logger.filters if isinstance(f, _DropInt8CastNotice)]:
        logger.removeFilter(installed)  # an engine loaded earlier in this process installed it
    with caplog.at_level(logging.WARNING):
        with torch.inference_mode():
            layer(torch.randn(1, 64))
        assert any("inputs will be cast" in record.getMessage() for record in caplog.records)
        caplog.clear()
        quiet_int8_cast_notice()
        quiet_int8_cast_notice()  # once is enough: no second filter
        with torch.inference_mode():
            layer(torch.randn(1, 64))
        logger.warning("something else bitsandbytes has to say")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["something else bitsandbytes has to say"]
    assert len(logger.filters) == 1


def test_four_bit_layers_keep_the_portable_cpu_path_even_where_the_width_is_not_a_multiple_of_the_block() -> None:
    # 80 inputs: not a multiple of the 64-weight block. On an AVX512-BF16 CPU bitsandbytes 0.50.2's repacking
    # fails on such a layer; the portable path computes it, identically on every CPU.
    layer = four_bit_layer(80, 32)
    model = torch.nn.Sequential(torch.nn.Identity(), layer)
    portable_cpu_four_bit(model)
    assert layer.support_avx512bf16_for_cpu is False
    x = torch.randn(3, 80)
    with torch.inference_mode():
        out = layer(x)
    from bitsandbytes.functional import dequantize_4bit

    weight = dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
    assert torch.allclose(out, x @ weight.t(), atol=1e-4)


def _int8_weights(model: torch.nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from bitsandbytes.nn import Int8Params

    return {name: (param.data, param.SCB) for name, param in model.named_parameters() if isinstance(param, Int8Params)}


def test_int8_weights_quantised_where_they_were_loaded_equal_transformers_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from transformers import AutoModelForImageTextToText, BitsAndBytesConfig
    from transformers.integrations import bitsandbytes as integration

    int8_quantized_where_loaded()
    int8_quantized_where_loaded()  # once is enough: the second call does not wrap the first
    where_loaded = integration.Bnb8bitQuantize.convert
    stock = where_loaded.__wrapped__
    assert not hasattr(stock, "__wrapped__")

    def load() -> torch.nn.Module:
        config = BitsAndBytesConfig(load_in_8bit=True)
        return AutoModelForImageTextToText.from_pretrained(TINY_MODEL, quantization_config=config, device_map="cpu")

    monkeypatch.setattr(integration.Bnb8bitQuantize, "convert", stock)
    expected = _int8_weights(load())
    converted: list[str] = []

    def counted(self: object, input_dict: dict[str, object], **kwargs: object) -> dict[str, object]:
        converted.extend(input_dict)
        return where_loaded(self, input_dict, **kwargs)

    monkeypatch.setattr(integration.Bnb8bitQuantize, "convert", counted)
    got = _int8_weights(load())
    assert expected
    assert sorted(got) == sorted(expected)
    assert len(converted) == len(expected)
    for name, (weight, scales) in expected.items():
        assert got[name][0].dtype == torch.int8
        assert torch.equal(got[name][0], weight), name
        assert torch.equal(got[name][1], scales), name


def test_a_transformers_without_the_8bit_conversion_keeps_its_own_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers.integrations import bitsandbytes as integration

    monkeypatch.delattr(integration, "Bnb8bitQuantize")
    int8_quantized_where_loaded()  # nothing to replace: no error, nothing added
    assert not hasattr(integration, "Bnb8bitQuantize")
