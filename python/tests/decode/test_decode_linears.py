"""The decode step's 8-bit linear equals bitsandbytes' LLM.int8(); its Triton kernel computes the same sums.

The kernel runs in Triton's CPU interpreter (TRITON_INTERPRET=1, set before Triton is imported, hence the
subprocess); on the GPU machine the benchmark checks it against bitsandbytes' CUDA forward.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from quantized_layers import eight_bit_layer

from idefics2_worker.decode.linears import DecodeLinears, runs_invariant_matmul
from idefics2_worker.kernels import batch_invariant_matmul, programmatic_launch, triton_support


def holder(layer: torch.nn.Module) -> SimpleNamespace:
    text = torch.nn.Sequential(layer)
    return SimpleNamespace(
        model=SimpleNamespace(text_model=text), lm_head=torch.nn.Identity(), device=torch.device("cpu")
    )


def interpreted(script: str) -> dict:
    """Runs a script under Triton's interpreter (set before Triton is imported) and reads its last line's JSON."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("threshold", [6.0, 0.0])
def test_the_capturable_int8_forward_equals_bitsandbytes_per_row(threshold: float) -> None:
    layer = eight_bit_layer(64, 48, threshold)
    linears = DecodeLinears(holder(layer))
    assert linears.eight_bit == [layer]
    rows = torch.randn(3, 1, 64)
    rows[0, 0, 5] = 9.0  # an outlier column in the first row only
    rows[2, 0, 7] = -7.5
    with torch.inference_mode():
        expected = torch.cat([layer(row[None]) for row in rows])  # bitsandbytes, one row at a time
        with linears.capturable():
            ours = layer(rows)
        after = layer(rows[:1])
    assert ours.shape == expected.shape == (3, 1, 48)
    assert torch.allclose(ours, expected, atol=1e-5, rtol=0)
    # Outside the context the module is bitsandbytes' again.
    assert torch.allclose(after, expected[:1], atol=1e-6, rtol=0)


def test_the_triton_int8_kernels_compute_bitsandbytes_sums() -> None:
    script = """
import json, torch
from idefics2_worker.kernels.int8_gemv import MMA_TILING, Tiling, eight_bit_gemv
from idefics2_worker.kernels.int8_quantize import outlier_columns
torch.manual_seed(0)
results = {}
cases = [(1, 40, 300, torch.bfloat16, None), (3, 96, 512, torch.float16, None), (8, 17, 256, torch.float32, None),
         (11, 24, 128, torch.bfloat16, None), (3, 96, 512, torch.float16, Tiling(8, 256)),
         (1, 40, 300, torch.bfloat16, MMA_TILING), (19, 33, 384, torch.bfloat16, Tiling(16, 128, 4, True)),
         (1, 24, 1036, torch.bfloat16, Tiling(8, 512)), (2, 40, 256, torch.bfloat16, None),
         (1, 40, 302, torch.bfloat16, None)]
for rows, n, k, dtype, tiling in cases:
    weight = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    weight_absmax = torch.rand(n) * 0.1
    quantized = torch.randint(-127, 128, (rows, k), dtype=torch.int8)
    row_absmax = torch.rand(rows) * 3
    outliers = torch.zeros(rows, k)
    outliers[0, 5] = 9.0
    outliers[-1, k - 1] = -7.5
    exact = quantized.int() @ weight.int().t()
    main = (exact.float() * (row_absmax[:, None] * weight_absmax[None, :]) * 6.200124e-05).half().to(dtype)
    extra = outliers @ (weight.float() * weight_absmax[:, None] * 7.874015718698502e-3).t()
    expected = (main.float() + extra).to(dtype)
    columns, counts = outlier_columns(outliers)
    ours = eight_bit_gemv(quantized, outliers, columns, counts, weight, row_absmax, weight_absmax, dtype, tiling)
    ulp = torch.finfo(dtype).eps * expected.float().abs().max().item()
    results[f"{rows}x{n}x{k} {tiling}"] = {
        "shape_ok": list(ours.shape) == [rows, n] and ours.dtype == dtype,
        "max_err_in_ulps": (ours.float() - expected.float()).abs().max().item() / ulp,
    }
try:  # an explicit one-row tiling cannot read K = 302 in words of four
    eight_bit_gemv(quantized[:, :302], outliers[:, :302], columns, counts, weight[:, :302], row_absmax, weight_absmax,
                   dtype, Tiling(8, 256))
    refused = False
except ValueError as error:
    refused = "MMA tiling" in str(error)
results["refused"] = refused
print(json.dumps(results))
"""
    results = interpreted(script)
    assert results.pop("refused") is True
    assert len(results) == 10
    for case, result in results.items():
        assert result["shape_ok"], case
        # Same sums; only float32 addition order and one rounding step can differ.
        assert result["max_err_in_ulps"] <= 2.0, (case, result)


def test_the_int8_quantize_kernel_computes_the_torch_quantisation_exactly() -> None:
    script = """
import json, torch
from idefics2_worker.decode.linears import QuantizedInput
from idefics2_worker.kernels.int8_quantize import outlier_columns, quantize_rows
torch.manual_seed(0)
results = {}
for k, threshold in [(300, 6.0), (512, 0.0), (4096, 6.0), (640, 2.5), (384, 6.0996)]:
    for trial in range(4):
        rows = (torch.randn(5, k) * 2).to(torch.bfloat16)
        rows[1, :2] = rows[1, 2] * 2  # |x| = absmax / 2: 63.5 before rounding, where rounding conventions split
        rows[3, 7] = 6.09765625  # an outlier at 6.0996 only in float16 terms, as torch compares
        expected = QuantizedInput(rows, threshold, kernels=False)
        ours = quantize_rows(rows, threshold, lists=True)
        # By default five rows go without the lists (no tiling reads them there); the rest is the same.
        default = quantize_rows(rows, threshold)
        unlisted = default.outliers is None and default.columns is None and default.counts is None
        same = all(torch.equal(a, b) for a, b in zip(default[:2] + default[5:], ours[:2] + ours[5:], strict=True))
        outliers = expected.outliers if expected.outliers is not None else torch.zeros(5, k)
        columns, counts = outlier_columns(outliers)
        listed = all(torch.equal(ours.columns[r, : counts[r]], columns[r, : counts[r]]) for r in range(5))
        results[f"{k} {threshold} {trial}"] = [
            bool(torch.equal(ours.quantized, expected.quantized)),
            bool(torch.equal(ours.stats, expected.stats)),
            bool(torch.equal(ours.outliers, outliers)),
            bool(torch.equal(ours.counts, counts)) and listed,
            int(ours.counts.sum()),
            unlisted and same,
        ]
print(json.dumps(results))
"""
    results = interpreted(script)
    assert len(results) == 20
    for case, (quantized, stats, outliers, listed, outlier_count, unlisted) in results.items():
        assert quantized, case
        assert stats, case
        assert outliers, case
        assert listed, case
        assert unlisted, case
        assert (outlier_count > 0) == (float(case.split()[1]) > 0), case


def test_the_outliers_in_int8_pieces_are_exact_and_multiplied_in_the_mma() -> None:
    script = """
import json, torch
from dataclasses import replace
from idefics2_worker.kernels.int8_gemv import MMA_TILING, Tiling, eight_bit_gemv
from idefics2_worker.kernels.int8_quantize import quantize_rows
torch.manual_seed(0)
results = {}
for dtype, k, n in [(torch.bfloat16, 256, 40), (torch.float16, 320, 24)]:
    rows = torch.randn(6, k).to(dtype)
    # Outliers spread over nine binades, both signs, several a row; row 2 has none; row 4 one at the threshold.
    for r, columns, values in [(0, [3, 90, 91], [9.0, -3000.5, 6.25]), (1, [5], [-7.5]), (3, [0, k - 1], [511.0, -6.5]),
                               (4, [17], [6.0]), (5, [40, 41, 200], [1234.0, -77.0, 8.5])]:
        rows[r, columns] = torch.tensor(values, dtype=dtype)
    q = quantize_rows(rows, 6.0, lists=True)
    whole = q.pieces[:, 0].long() * 16384 + q.pieces[:, 1].long() * 128 + q.pieces[:, 2].long()
    rebuilt = whole.double() * q.piece_scales.double()[:, None]
    weight = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    weight_absmax = torch.rand(n) * 0.1
    ours = eight_bit_gemv(q.quantized, q.outliers, q.columns, q.counts, weight, q.stats, weight_absmax,
                          torch.float32, replace(MMA_TILING, pieces=True), pieces=(q.pieces, q.piece_scales))
    # K split over three programs a block of outputs (the last one short), their int32 sums added: the same bits.
    operands = (q.quantized, q.outliers, q.columns, q.counts, weight, q.stats, weight_absmax, torch.bfloat16)
    whole_k = eight_bit_gemv(*operands, Tiling(16, 32, mma=True, pieces=True), pieces=(q.pieces, q.piece_scales))
    split_k = eight_bit_gemv(*operands, Tiling(16, 32, mma=True, pieces=True, splits=3),
                             pieces=(q.pieces, q.piece_scales))
    exact = q.quantized.int() @ weight.int().t()
    main = (exact.float() * (q.stats[:, None] * weight_absmax[None, :]) * 6.200124e-05).half().double()
    extra = q.outliers.double() @ (weight.double() * weight_absmax.double()[:, None] * 7.874015718698502e-3).t()
    expected = main + extra
    results[str(dtype)] = {
        "pieces_exact": bool(torch.equal(rebuilt, q.outliers.double())),
        "row_without_outliers": bool(q.piece_scales[2] == 0 and q.pieces[2].eq(0).all()),
        "split_k_same_bits": bool(torch.equal(split_k, whole_k)),
        "max_err_in_float32_ulps": ((ours.double() - expected).abs().max() / (expected.abs().max() * 2**-23)).item(),
    }
print(json.dumps(results))
"""
    results = interpreted(script)
    assert len(results) == 2
    for dtype, result in results.items():
        assert result["pieces_exact"], dtype
        assert result["row_without_outliers"], dtype
        assert result["split_k_same_bits"], dtype
        # The main term's float16 rounding is bitsandbytes'; the outliers' term is exact until one float32 rounding.
        assert result["max_err_in_float32_ulps"] <= 4.0, (dtype, result)


def four_bit_layer(compute: torch.dtype, nested: bool, inputs: int = 128) -> torch.nn.Module:
    import bitsandbytes as bnb

    layer = bnb.nn.Linear4bit(inputs, 32, bias=False, compute_dtype=compute, quant_type="nf4")
    weight = (torch.randn(32, inputs) * 0.05).to(torch.bfloat16)
    layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4", compress_statistics=nested)
    return layer.to("cpu").eval()


@pytest.mark.parametrize(
    ("compute", "nested", "inputs", "taken"),
    [
        (torch.float32, False, 128, True),  # transformers' default: the kernel computes bitsandbytes' sums
        (torch.bfloat16, False, 128, False),  # bitsandbytes rounds products in bf16 there: its own kernel
        (torch.float32, True, 128, False),  # double-quantised absmax: its own kernel, keeping the memory saved
        (torch.float32, False, 160, False),  # a block that spans two rows
    ],
)
def test_the_four_bit_kernel_takes_only_layers_whose_sums_it_computes(
    compute: torch.dtype, nested: bool, inputs: int, taken: bool
) -> None:
    layer = four_bit_layer(compute, nested, inputs)
    assert DecodeLinears(holder(layer), kernels=True).four_bit == ([layer] if taken else [])
    # Without kernels (CPU, no Triton) every 4-bit layer keeps bitsandbytes' forward.
    assert DecodeLinears(holder(layer), kernels=False).four_bit == []


@pytest.mark.parametrize(
    ("dtype", "kernels_run", "programmatic", "deterministic", "invariant"),
    [
        (torch.bfloat16, True, True, False, True),  # change 65: the default's bf16 projections where launched so
        (torch.float16, True, True, False, True),
        (torch.float32, True, True, False, False),  # cuBLAS's TF32-free float32 is what the module computes
        (torch.bfloat16, True, False, False, False),  # before Hopper: plain launches, cuBLAS's step was ahead (H67)
        (torch.bfloat16, False, False, False, False),  # no Triton (CPU): torch's linear
        (torch.float32, False, False, True, True),  # deterministic: every plain linear (the tests' interpreter)
    ],
)
def test_which_plain_linears_run_the_batch_invariant_matmul(  # noqa: PLR0917 - the case's columns
    monkeypatch: pytest.MonkeyPatch,
    dtype: torch.dtype,
    kernels_run: bool,
    programmatic: bool,
    deterministic: bool,
    invariant: bool,
) -> None:
    monkeypatch.setattr(triton_support, "available", lambda _device: kernels_run)
    monkeypatch.setattr(programmatic_launch, "supported", lambda _device: programmatic)
    assert runs_invariant_matmul(torch.empty(4, 4, dtype=dtype), deterministic) is invariant


def test_the_default_modes_bf16_linears_run_the_matmul_and_float32_ones_their_own_forward(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(triton_support, "available", lambda _device: True)
    monkeypatch.setattr(programmatic_launch, "supported", lambda _device: True)
    calls: list[tuple[int, int]] = []

    def recorded(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        calls.append(tuple(weight.shape))
        return torch.nn.functional.linear(x, weight, bias)

    monkeypatch.setattr(batch_invariant_matmul, "linear", recorded)
    torch.manual_seed(0)
    bf16 = torch.nn.Linear(16, 8, bias=False).to(torch.bfloat16)
    wide = torch.nn.Linear(16, 12, bias=False)
    model = SimpleNamespace(
        model=SimpleNamespace(text_model=torch.nn.Sequential(bf16, wide)),
        lm_head=torch.nn.Identity(),
        device=torch.device("cpu"),
    )
    decode = DecodeLinears(model, kernels=False)
    assert decode.dense == [bf16]
    x = torch.randn(2, 16)
    with torch.inference_mode(), decode.capturable():
        ours = bf16(x.to(torch.bfloat16))
        wide(x)
    assert calls == [(8, 16)]
    torch.testing.assert_close(ours, torch.nn.functional.linear(x.to(torch.bfloat16), bf16.weight))
