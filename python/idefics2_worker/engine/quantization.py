"""The load options' quantization as transformers' BitsAndBytesConfig."""

from __future__ import annotations

from typing import Any

from ..protocol.params import Quantization


def quantization_config(quant: Quantization) -> Any:
    """BitsAndBytesConfig with only the kwargs that differ from its defaults, so defaults equal the reference's."""
    if quant.mode == "none":
        return None
    from transformers import BitsAndBytesConfig

    kwargs: dict[str, Any] = {}
    if quant.mode == "8bit":
        kwargs["load_in_8bit"] = True
        if quant.int8_threshold is not None and quant.int8_threshold != 6.0:
            kwargs["llm_int8_threshold"] = quant.int8_threshold
    else:
        kwargs["load_in_4bit"] = True
        if quant.quant_type is not None and quant.quant_type != "fp4":
            kwargs["bnb_4bit_quant_type"] = quant.quant_type
        if quant.double_quant:
            kwargs["bnb_4bit_use_double_quant"] = True
        if quant.compute_dtype is not None:
            import torch

            kwargs["bnb_4bit_compute_dtype"] = getattr(torch, quant.compute_dtype)
    if quant.skip_modules is not None:
        kwargs["llm_int8_skip_modules"] = list(quant.skip_modules)
    return BitsAndBytesConfig(**kwargs)
