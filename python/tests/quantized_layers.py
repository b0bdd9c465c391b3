"""Small bitsandbytes layers with seeded random weights, on CPU, for tests of the code around them."""

from __future__ import annotations

import torch


def eight_bit_layer(inputs: int, outputs: int, threshold: float = 6.0, seed: int = 0) -> torch.nn.Module:
    import bitsandbytes as bnb

    torch.manual_seed(seed)
    layer = bnb.nn.Linear8bitLt(inputs, outputs, bias=False, has_fp16_weights=False, threshold=threshold)
    weight = torch.randn(outputs, inputs) * 0.05
    layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    return layer.to("cpu").eval()


def four_bit_layer(
    inputs: int, outputs: int, quant_type: str = "nf4", dtype: torch.dtype = torch.float32, nested: bool = True
) -> torch.nn.Module:
    import bitsandbytes as bnb

    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(inputs, outputs, bias=False, compute_dtype=torch.float32, quant_type=quant_type)
    weight = (torch.randn(outputs, inputs) * 0.05).to(dtype)
    layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type=quant_type, compress_statistics=nested)
    return layer.to("cpu").eval()
