"""4-bit layers packed in place for the packed tensor-core kernel (packed_four_bit): every path that reads them after
the packing computes what it computed before, bit for bit: the module's own forward (bitsandbytes' kernel on its
layout, unpacked for the call), the prefill's dequantised weight (bitsandbytes' and the worker's Triton kernel, which
reads the packed layout as it lies), and the decode step's forwards put back after each step. The packed kernel
itself runs on a GPU only (scripts/gpu/tune_four_bit_cuda.py --kernel packed, scripts/gpu/gpu_parity.py)."""

from __future__ import annotations

import pytest
import torch
from quantized_layers import four_bit_layer
from test_decode_linears import holder, interpreted

from idefics2_worker.decode import packed_four_bit
from idefics2_worker.decode.linears import DecodeLinears
from idefics2_worker.decode.prefill_linears import dequantized_weight


def _layer(inputs: int, outputs: int) -> torch.nn.Module:
    """A 4-bit layer on bitsandbytes' portable CPU path, as the worker keeps it (compat.portable_cpu_four_bit):
    bitsandbytes would otherwise repack it for an AVX512-BF16 kernel at its first CPU forward."""
    layer = four_bit_layer(inputs, outputs, nested=False)
    layer.support_avx512bf16_for_cpu = False
    return layer


def _codes(module: torch.nn.Module) -> torch.Tensor:
    return module.weight.data.clone()


def test_a_packed_layers_forward_keeps_its_bits_and_its_weights_stay_in_one_copy() -> None:
    layer = _layer(256, 48)
    rows = [torch.randn(1, 1, 256), torch.randn(5, 256)]
    with torch.inference_mode():
        before = [layer(x) for x in rows]
    codes, absmax, parameters = _codes(layer), layer.weight.quant_state.absmax.clone(), layer.weight.numel()
    whole = packed_four_bit.pack([layer], layer.weight.data, layer.weight.quant_state.absmax)
    packed = packed_four_bit.packed_of(layer)
    assert packed is not None
    assert packed.alone
    assert layer.weight.data.untyped_storage().data_ptr() == whole.weights.untyped_storage().data_ptr()
    assert layer.weight.numel() == parameters  # its own tiles, not the padding's
    assert not torch.equal(layer.weight.data.view(-1), codes.view(-1))  # the layout did change
    with torch.inference_mode():
        after = [layer(x) for x in rows]
    for b, a in zip(before, after, strict=True):
        assert torch.equal(b, a)
    with packed_four_bit.bitsandbytes_layout(layer):
        assert torch.equal(layer.weight.data, codes)
        assert torch.equal(layer.weight.quant_state.absmax, absmax)
    assert layer.weight.data.untyped_storage().data_ptr() == whole.weights.untyped_storage().data_ptr()


def test_a_groups_layers_pack_together_and_each_keeps_its_forward() -> None:
    layers = [_layer(128, n) for n in (64, 32, 32)]
    x = torch.randn(3, 1, 128)
    with torch.inference_mode():
        before = [layer(x) for layer in layers]
    codes = torch.cat([layer.weight.data for layer in layers])
    absmax = torch.cat([layer.weight.quant_state.absmax for layer in layers])
    whole = packed_four_bit.pack(layers, codes, absmax)
    assert packed_four_bit.packed_together(layers) is whole
    assert packed_four_bit.packed_together(layers[::-1]) is None  # not in that order
    assert packed_four_bit.packed_together(layers[:2]) is None  # nor without v
    assert not any(packed_four_bit.packed_of(layer).alone for layer in layers)  # type: ignore[union-attr]
    with torch.inference_mode():
        for layer, expected in zip(layers, before, strict=True):
            assert torch.equal(layer(x), expected)


def test_a_layer_of_part_tiles_is_not_packed() -> None:
    layer = _layer(128, 40)
    with pytest.raises(ValueError, match="whole tiles"):
        packed_four_bit.pack([layer], layer.weight.data, layer.weight.quant_state.absmax)
    assert packed_four_bit.packed_of(layer) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_prefill_dequantises_a_packed_layer_to_the_same_weight(dtype: torch.dtype) -> None:
    layer = _layer(256, 32)
    expected = dequantized_weight(layer, dtype)
    packed_four_bit.pack([layer], layer.weight.data, layer.weight.quant_state.absmax)
    assert torch.equal(dequantized_weight(layer, dtype), expected)


def test_the_decode_steps_forwards_give_the_packed_forward_back() -> None:
    layer = _layer(128, 32)
    packed_four_bit.pack([layer], layer.weight.data, layer.weight.quant_state.absmax)
    exact = layer.__dict__["forward"]
    linears = DecodeLinears(holder(layer), kernels=True)
    assert linears.four_bit == [layer]
    assert linears.pack_dtype is None  # no packed kernel on a CPU
    with linears.capturable():
        assert layer.__dict__["forward"] is not exact
    assert layer.__dict__["forward"] is exact


@pytest.mark.timeout(240)
def test_the_triton_dequantisation_reads_the_packed_layout() -> None:
    script = """
import json, torch
from types import SimpleNamespace
from idefics2_worker.kernels import four_bit_packing
from idefics2_worker.kernels.four_bit_dequantize import four_bit_dequantize
torch.manual_seed(0)
same = []
for n, k, blocksize in ((48, 256, 64), (1040, 128, 128), (32, 14336 // 8, 64)):
    codes = torch.randint(0, 256, (n * k // 2, 1), dtype=torch.uint8)
    state = SimpleNamespace(shape=(n, k), absmax=torch.rand(n * k // blocksize), code=torch.randn(16),
                            blocksize=blocksize)
    layer = four_bit_packing.pack(codes, state.absmax, (n, k), blocksize)
    for dtype in (torch.float32, torch.bfloat16):
        plain = four_bit_dequantize(codes, state, dtype)
        same.append(torch.equal(four_bit_dequantize(codes, state, dtype, layer.part(0, n // 16)), plain))
        same.append(torch.equal(four_bit_dequantize(codes, state, dtype, layer), plain))
print(json.dumps({"same": same}))
"""
    assert interpreted(script)["same"] == [True] * 12


def test_a_later_steps_fusion_reuses_a_group_packed_together_and_leaves_one_packed_apart() -> None:
    from idefics2_worker.decode.fused_projections import FusedProjection

    together = [_layer(128, n) for n in (64, 32, 32)]
    packed_four_bit.pack(
        together,
        torch.cat([layer.weight.data for layer in together]),
        torch.cat([layer.weight.quant_state.absmax for layer in together]),
    )
    pointers = [layer.weight.data.data_ptr() for layer in together]
    fused = FusedProjection.of(together, deterministic=False)
    assert fused is not None  # the packed product over the group's tensor, as the first step built it
    assert fused.sizes == [64, 32, 32]
    assert [layer.weight.data.data_ptr() for layer in together] == pointers  # not joined or packed again
    apart = [_layer(128, n) for n in (32, 32)]
    for layer in apart:
        packed_four_bit.pack([layer], layer.weight.data, layer.weight.quant_state.absmax)
    assert FusedProjection.of(apart, deterministic=False) is None
