"""A layer's projections that read the same input, computed as one product over views of the modules' weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from idefics2_worker.decode.fused_projections import FusedProjection

TESTS = Path(__file__).resolve().parents[1]


def linears(*outputs: int, inputs: int = 64, bias: bool = False) -> list[torch.nn.Linear]:
    torch.manual_seed(0)
    return [torch.nn.Linear(inputs, n, bias=bias) for n in outputs]


def test_dense_projections_give_each_module_its_own_output_from_one_product() -> None:
    modules = linears(48, 16, 16)
    x = torch.randn(3, 1, 64)
    with torch.inference_mode():
        before = [module(x) for module in modules]
        fused = FusedProjection.of(modules, deterministic=False)
        assert fused is not None
        outputs = fused(x)
        after = [module(x) for module in modules]
    assert [o.shape[-1] for o in outputs] == [48, 16, 16]
    for ours, theirs, again in zip(outputs, before, after, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
        assert torch.equal(again, theirs)  # the modules' weights are the same numbers, now views


def test_the_weights_become_views_of_one_tensor_and_a_second_fusion_reuses_it() -> None:
    modules = linears(32, 8)
    FusedProjection.of(modules, deterministic=False)
    first, second = (module.weight for module in modules)
    assert first.untyped_storage().data_ptr() == second.untyped_storage().data_ptr()
    assert second.storage_offset() == first.storage_offset() + first.numel()
    storage = first.untyped_storage().data_ptr()
    FusedProjection.of(modules, deterministic=False)
    assert modules[0].weight.untyped_storage().data_ptr() == storage


@pytest.mark.parametrize("why", ["bias", "input width", "dtype"])
def test_modules_that_cannot_share_one_product_are_left_alone(why: str) -> None:
    modules = linears(16, 16, bias=why == "bias")
    if why == "input width":
        modules[1] = linears(16, inputs=32)[0]
    if why == "dtype":
        modules[1] = modules[1].to(torch.bfloat16)
    pointers = [module.weight.data_ptr() for module in modules]
    assert FusedProjection.of(modules, deterministic=False) is None
    assert [module.weight.data_ptr() for module in modules] == pointers


def _interpreted_result(script: str, timeout: int) -> dict:
    """The JSON line a script prints, run under Triton's interpreter (TRITON_INTERPRET must precede its import)."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(TESTS.parent))
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


FOUR_BIT = """
import json, sys, torch
import bitsandbytes as bnb
from idefics2_worker.decode.fused_projections import FusedProjection
from idefics2_worker.kernels.four_bit_gemv import four_bit_gemv

torch.manual_seed(0)
modules = []
for n in (96, 32, 32):
    layer = bnb.nn.Linear4bit(128, n, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit((torch.randn(n, 128) * 0.05).to(torch.bfloat16), requires_grad=False,
                                     quant_type="nf4", compress_statistics=False)
    modules.append(layer.to("cpu"))  # quantised when moved
x = torch.randn(2, 1, 128, dtype=torch.bfloat16)
with torch.inference_mode():
    before = [m(x) for m in modules]
    alone = []
    for m in modules:
        s = m.weight.quant_state
        alone.append(four_bit_gemv(x[:, 0], m.weight.data.view(-1), s.absmax, s.code, tuple(s.shape),
                               s.blocksize))
    fused = FusedProjection.of(modules, deterministic=False)
    outputs = fused(x)
    after = [m(x) for m in modules]
ptr = [m.weight.data.untyped_storage().data_ptr() for m in modules]
steps = max(((o[:, 0].double() - a.double()).abs() / (2.0**-8 * a.double().abs().clamp_min(1e-3))).max().item()
            for o, a in zip(outputs, alone))
print(json.dumps({
    "shapes": [o.shape[-1] for o in outputs],
    "modules_unchanged": all(torch.equal(b, a) for b, a in zip(before, after)),
    "one_storage": len(set(ptr)) == 1,
    "absmax_one_storage": len({m.weight.quant_state.absmax.untyped_storage().data_ptr() for m in modules}) == 1,
    "steps_vs_each_alone": steps,
}))
"""


@pytest.mark.timeout(120)
def test_four_bit_projections_fuse_into_one_kernel_call_over_views_of_their_weights() -> None:
    result = _interpreted_result(FOUR_BIT, timeout=110)
    assert result["shapes"] == [96, 32, 32]
    assert result["modules_unchanged"]  # bitsandbytes' own forward reads the views: the same weights
    assert result["one_storage"]
    assert result["absmax_one_storage"]
    # The same float32 products; the kernel's tiling for the wider layer may order the sums differently.
    assert result["steps_vs_each_alone"] <= 1.0, result


EIGHT_BIT = """
import json, torch
import bitsandbytes as bnb
from idefics2_worker.decode.fused_projections import FusedProjection
from idefics2_worker.decode.linears import QuantizedInput, eight_bit_kernel_product, eight_bit_weight

torch.manual_seed(0)
modules = []
for n in (96, 32, 32):
    layer = bnb.nn.Linear8bitLt(128, n, bias=False, has_fp16_weights=False, threshold=6.0)
    layer.weight = bnb.nn.Int8Params(torch.randn(n, 128) * 0.05, requires_grad=False, has_fp16_weights=False)
    modules.append(layer.to("cpu").eval())  # quantised when moved
modules[0](torch.randn(1, 128, dtype=torch.bfloat16))  # q has run once: its int8 weight now sits on its state
result = {"equal_to_each_alone": [], "modules_unchanged": []}
for rows in (1, 2):  # the one-row kernel, then the MMA kernel
    x = torch.randn(rows, 1, 128, dtype=torch.bfloat16)
    x[0, 0, 5], x[-1, 0, 70] = 8.0, -7.0  # outliers: past the threshold, their term is added in float32
    with torch.inference_mode():
        before = [m(x) for m in modules]
        alone = [eight_bit_kernel_product(QuantizedInput(x[:, 0], 6.0, kernels=True), *eight_bit_weight(m),
                                          torch.bfloat16, False) for m in modules]
        fused = FusedProjection.of(modules, deterministic=False)
        outputs = fused(x)
        after = [m(x) for m in modules]
    result["shapes"] = [o.shape[-1] for o in outputs]
    result["equal_to_each_alone"].append(all(torch.equal(o[:, 0], a) for o, a in zip(outputs, alone)))
    result["modules_unchanged"].append(all(torch.equal(b, a) for b, a in zip(before, after)))
weights = [eight_bit_weight(m) for m in modules]
result["one_storage"] = len({w.untyped_storage().data_ptr() for w, _ in weights}) == 1
result["scales_one_storage"] = len({s.untyped_storage().data_ptr() for _, s in weights}) == 1
result["data_is_the_weight"] = all(m.weight.data.data_ptr() == w.data_ptr() for m, (w, _) in zip(modules, weights))
print(json.dumps(result))
"""


@pytest.mark.timeout(180)
def test_eight_bit_projections_fuse_into_one_kernel_call_with_one_quantised_input() -> None:
    result = _interpreted_result(EIGHT_BIT, timeout=170)
    assert result["shapes"] == [96, 32, 32]
    # Exact int32 sums and each output's outlier term over the same columns in the same order: the same bits.
    assert result["equal_to_each_alone"] == [True, True], result
    assert result["modules_unchanged"] == [True, True]  # bitsandbytes' own forward reads the views
    assert result["one_storage"]
    assert result["scales_one_storage"]
    assert result["data_is_the_weight"]  # no second copy of the int8 weights is kept alive


@pytest.mark.parametrize("invariant", [True, False])
def test_a_dense_group_runs_the_batch_invariant_matmul_where_the_linears_do(
    monkeypatch: pytest.MonkeyPatch, invariant: bool
) -> None:
    from idefics2_worker.decode import fused_projections
    from idefics2_worker.kernels import batch_invariant_matmul

    monkeypatch.setattr(fused_projections, "runs_invariant_matmul", lambda _weight, _deterministic: invariant)
    calls: list[tuple[int, int]] = []

    def recorded(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        calls.append(tuple(weight.shape))
        return torch.nn.functional.linear(x, weight, bias)

    monkeypatch.setattr(batch_invariant_matmul, "linear", recorded)
    fused = FusedProjection.of(linears(32, 8, 8), deterministic=False)
    assert fused is not None
    with torch.inference_mode():
        fused(torch.randn(2, 1, 64))
    assert calls == ([(48, 64)] if invariant else [])
