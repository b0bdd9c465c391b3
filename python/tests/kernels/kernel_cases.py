"""The worker's Triton kernels against the code they replace, on one device; prints one JSON line.

Each case reports the largest difference in units of the output dtype's rounding step at that value
(|ours - theirs| / (eps · |value|)): 0 means identical, 1 one rounding step. The rotary embedding's sums can
cancel, so there the step is taken at the size of the terms summed (inputs ~N(0, 1), |cos|, |sin| ≤ 1).
Run on a GPU machine as `python tests/kernels/kernel_cases.py --device cuda`, and on CPU by test_step_kernels.py under
Triton's interpreter (which truncates float32 → bfloat16 instead of rounding to nearest: more steps allowed).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from idefics2_worker.decode.linears import DecodeLinears
from idefics2_worker.engine import compat
from idefics2_worker.kernels import four_bit_cuda, saturating_cast, step_kernels
from idefics2_worker.kernels.four_bit_dequantize import four_bit_dequantize
from idefics2_worker.kernels.four_bit_gemv import Tiling, four_bit_gemv
from idefics2_worker.kernels.int8_dequantize import int8_dequantize

TINY_MODEL = Path(__file__).resolve().parents[3] / "assets" / "tiny-idefics2"


def steps(ours: torch.Tensor, theirs: torch.Tensor, floor: float = 1e-30) -> float:
    if ours.shape != theirs.shape or ours.dtype != theirs.dtype:
        return float("inf")
    a, b = ours.double(), theirs.double()
    scale = torch.finfo(ours.dtype).eps * torch.maximum(a.abs(), b.abs()).clamp_min(floor)
    return float(((a - b).abs() / scale).max().item())


def four_bit_cases(device: str) -> dict[str, float]:
    import bitsandbytes as bnb

    results = {}
    cases = [(1, 40, 256, False, Tiling()), (3, 96, 512, True, Tiling(8, 4, 4)), (8, 17, 320, False, Tiling(2, 2, 2))]
    cases.append((11, 24, 128, False, None))  # more rows than one launch takes
    cases.append((19, 40, 256, True, None))
    cases.append((1, 40, 256, True, Tiling(8, 2, 4, defer=True)))  # one row: sums reduced once, at the end
    cases.append((5, 40, 256, True, Tiling(8, 2, 4, invariant=True)))  # deterministic decoding's order
    # Several rows' sums kept per lane: 3 rows (padded to 4), and more rows than one launch takes.
    cases += [(3, 40, 256, True, Tiling(4, 2, 4, defer=True)), (11, 24, 192, False, Tiling(2, 2, 2, defer=True))]
    for quant_type in ("nf4", "fp4"):
        for rows, n, k, bias, tiling in cases:
            layer = bnb.nn.Linear4bit(k, n, bias=bias, compute_dtype=torch.float32, quant_type=quant_type)
            weight = (torch.randn(n, k) * 0.05).to(torch.bfloat16)
            layer.weight = bnb.nn.Params4bit(
                weight, requires_grad=False, quant_type=quant_type, compress_statistics=False
            )
            if bias:
                layer.bias = torch.nn.Parameter(torch.randn(n).to(torch.bfloat16), requires_grad=False)
            layer = layer.to(device)
            x = torch.randn(rows, k, dtype=torch.bfloat16, device=device)
            with torch.inference_mode():
                theirs = torch.cat([layer(x[i : i + 1]) for i in range(rows)])  # bitsandbytes, one row at a time
                state = layer.weight.quant_state
                layer_bias = None if layer.bias is None else layer.bias.float()
                shape = (n, k)
                ours = four_bit_gemv(
                    x,
                    layer.weight.data.view(-1),
                    state.absmax,
                    state.code,
                    shape,
                    state.blocksize,
                    layer_bias,
                    tiling,
                )
            results[f"four_bit {quant_type} {rows}x{n}x{k}{' bias' if bias else ''}"] = steps(ours, theirs)
    return results


def four_bit_cuda_cases(device: str) -> dict[str, float]:
    """The 4-bit CUDA kernels (NVRTC; CUDA devices only), tensor cores (bf16 / fp16) and CUDA cores, against
    bitsandbytes' forward of one row at a time, at every input dtype, both codes, a bias, odd outputs, 1-8 rows and
    more rows than one launch takes, two block sizes; in rounding steps of the output dtype at the outputs' RMS."""
    import bitsandbytes as bnb

    if not device.startswith("cuda"):
        return {}
    results = {}
    kernels = (
        ("four_bit_mma", four_bit_cuda.mma_usable, four_bit_cuda.four_bit_mma_cuda),
        ("four_bit_cuda", four_bit_cuda.usable, four_bit_cuda.four_bit_gemv_cuda),
    )
    cases = [(1, 40, 256, False, 64), (3, 96, 512, True, 64), (8, 17, 320, False, 64), (11, 24, 128, False, 64)]
    cases += [(19, 40, 256, True, 64), (5, 48, 1024, False, 256)]
    cases.append((2, 130, 4096, False, 64))  # a K longer than one warp's pass: several steps and a tail
    for dtype, quant_type in itertools.product((torch.bfloat16, torch.float16, torch.float32), ("nf4", "fp4")):
        for rows, n, k, bias, blocksize in cases:
            layer = bnb.nn.Linear4bit(k, n, bias=bias, compute_dtype=torch.float32, quant_type=quant_type)
            weight = (torch.randn(n, k) * 0.05).to(torch.bfloat16)
            layer.weight = bnb.nn.Params4bit(
                weight, requires_grad=False, quant_type=quant_type, compress_statistics=False, blocksize=blocksize
            )
            if bias:
                layer.bias = torch.nn.Parameter(torch.randn(n).to(dtype), requires_grad=False)
            layer = layer.to(device)
            x = torch.randn(rows, k, dtype=dtype, device=device)
            state = layer.weight.quant_state
            packed, shape = layer.weight.data.view(-1), (n, k)
            with torch.inference_mode():
                theirs = torch.cat([layer(x[i : i + 1]) for i in range(rows)])
            layer_bias = None if layer.bias is None else layer.bias.float()
            # Steps at the outputs' RMS: float32 outputs differ from bitsandbytes' by the order of their sums, which
            # near a zero output is many steps of that output's own size.
            rms = theirs.double().pow(2).mean().sqrt()
            dtype_name = str(dtype).removeprefix("torch.")
            shown = f"{dtype_name} {quant_type} {rows}x{n}x{k}{' bias' if bias else ''} block {blocksize}"
            for kernel, usable, product in kernels:
                if kernel == "four_bit_mma" and dtype not in four_bit_cuda.MMA_DTYPES:
                    continue  # float32 inputs keep the CUDA-core kernel
                if not usable(x, packed, state.absmax, shape, state.blocksize):
                    results[f"{kernel} {shown}"] = float("inf")  # both compile on every CUDA device these run on
                    continue
                with torch.inference_mode():
                    ours = product(x, packed, state.absmax, state.code, shape, state.blocksize, layer_bias)
                error = (ours.double() - theirs.double()).abs().max() / (torch.finfo(dtype).eps * rms)
                results[f"{kernel} {shown}"] = float(error)
    return results


def eight_bit_cases(device: str) -> dict[str, float]:
    """The capturable int8 forward with the worker's kernels (quantisation, then the one-row or the MMA
    product) against bitsandbytes' forward of one row at a time; steps taken at the outputs' RMS."""
    import bitsandbytes as bnb

    compat.quiet_int8_cast_notice()
    results = {}
    for rows, threshold in ((1, 6.0), (5, 6.0), (5, 0.0), (18, 6.0)):
        layer = bnb.nn.Linear8bitLt(512, 96, bias=False, has_fp16_weights=False, threshold=threshold)
        layer.weight = bnb.nn.Int8Params(torch.randn(96, 512) * 0.05, requires_grad=False, has_fp16_weights=False)
        layer = layer.to(device).eval()
        x = torch.randn(rows, 1, 512).to(torch.bfloat16).to(device)
        x[0, 0, 5] = 9.0  # outliers at threshold 6: one in the first row, one in the last
        x[-1, 0, 300] = -7.5
        holder = SimpleNamespace(
            model=SimpleNamespace(text_model=torch.nn.Sequential(layer)), lm_head=torch.nn.Identity(), device=device
        )
        linears = DecodeLinears(holder, kernels=True)
        with torch.inference_mode():
            theirs = torch.cat([layer(x[i : i + 1]) for i in range(rows)])
            with linears.capturable():
                ours = layer(x)
        rms = theirs.double().pow(2).mean().sqrt().item()
        results[f"int8 {rows} rows threshold {threshold} bfloat16"] = steps(ours, theirs, floor=rms)
    return results


def step_cases(device: str) -> dict[str, float]:
    from transformers.models.mistral.modeling_mistral import (
        MistralConfig,
        MistralRMSNorm,
        MistralRotaryEmbedding,
        apply_rotary_pos_emb,
    )

    results = {}
    for dtype in (torch.bfloat16, torch.float32):
        name = str(dtype).removeprefix("torch.")
        dim = 320
        norm = MistralRMSNorm(dim, eps=1e-5).to(dtype)
        norm.weight.data = (torch.rand(dim) + 0.5).to(dtype)
        norm = norm.to(device)
        residual = (torch.randn(3, 1, dim) * 4).to(dtype).to(device)
        delta = torch.randn(3, 1, dim).to(dtype).to(device)
        hidden, normed = step_kernels.add_rms_norm(residual, delta, norm.weight, norm.variance_epsilon)
        same, first = step_kernels.add_rms_norm(residual, None, norm.weight, norm.variance_epsilon)
        results[f"residual add {name}"] = steps(hidden, residual + delta)
        results[f"add + rms norm {name}"] = steps(normed, norm(residual + delta))
        results[f"rms norm {name}"] = steps(first, norm(residual))
        results[f"rms norm keeps its input {name}"] = 0.0 if same is residual else float("inf")

        gate = (torch.randn(3, 1, 700) * 3).to(dtype).to(device)
        up = torch.randn(3, 1, 700).to(dtype).to(device)
        results[f"silu * up {name}"] = steps(step_kernels.silu_mul(gate, up), torch.nn.functional.silu(gate) * up)
        # The fused step's inputs are column slices of one gate/up product: rows a stride apart, read in place.
        gate_view, up_view = torch.cat([gate, up], dim=-1).split(700, dim=-1)
        strided = step_kernels.silu_mul(gate_view, up_view)
        results[f"silu * up, strided inputs, same bits {name}"] = steps(strided, step_kernels.silu_mul(gate, up))

        rows, heads, kv_heads, head_dim, length = 3, 4, 2, 40, 16
        rotary = MistralRotaryEmbedding(MistralConfig(hidden_size=160, num_attention_heads=heads, head_dim=head_dim))
        positions = torch.tensor([5, 0, 11], device=device)
        query = torch.randn(rows, 1, heads * head_dim).to(dtype).to(device)
        key = torch.randn(rows, 1, kv_heads * head_dim).to(dtype).to(device)
        value = torch.randn(rows, 1, kv_heads * head_dim).to(dtype).to(device)
        cos, sin = rotary.to(device)(query, positions[:, None])
        keys = torch.zeros(rows, kv_heads, length, head_dim, dtype=dtype, device=device)
        values = torch.zeros_like(keys)
        rotated = step_kernels.rotary_into_cache(query, key, value, cos, sin, keys, values, positions)
        as_heads = (
            query.view(rows, 1, heads, head_dim).transpose(1, 2),
            key.view(rows, 1, kv_heads, head_dim).transpose(1, 2),
        )
        query_e, key_e = apply_rotary_pos_emb(*as_heads, cos, sin)
        keys_e, values_e = torch.zeros_like(keys), torch.zeros_like(keys)
        slots = torch.arange(rows, device=device)
        keys_e[slots, :, positions] = key_e[:, :, 0]
        values_e[slots, :, positions] = value.view(rows, kv_heads, head_dim)
        results[f"rotary query {name}"] = steps(rotated, query_e[:, :, 0], floor=1.0)
        results[f"rotary key into cache {name}"] = steps(keys, keys_e, floor=1.0)
        results[f"value into cache {name}"] = steps(values, values_e)
        views = torch.cat([query, key, value], dim=-1).split([query.shape[-1], key.shape[-1], value.shape[-1]], -1)
        keys_v, values_v = torch.zeros_like(keys), torch.zeros_like(keys)
        rotated_v = step_kernels.rotary_into_cache(*views, cos, sin, keys_v, values_v, positions)
        same = max(steps(rotated_v, rotated), steps(keys_v, keys), steps(values_v, values))
        results[f"rotary into cache, strided inputs, same bits {name}"] = same
    return results


def int8_dequantize_cases(device: str) -> dict[str, float]:
    """The prefill's int8 dequantisation kernel against the torch form it replaces (`dequantized_weight` off GPU)."""
    quantized = torch.randint(-127, 128, (37, 300), dtype=torch.int8, device=device)
    scales = (torch.rand(37, device=device) * 4).to(torch.float32)
    torch_form = quantized.to(torch.float32) * (scales[:, None] / 127.0)
    full = int8_dequantize(quantized, scales, torch.float32)
    half = int8_dequantize(quantized, scales, torch.bfloat16)
    return {
        "int8 dequantise float32, same bits": steps(full, torch_form),
        "int8 dequantise bfloat16": steps(half, torch_form.to(torch.bfloat16)),
    }


def four_bit_dequantize_cases(device: str) -> dict[str, float]:
    """The prefill's 4-bit dequantisation kernel against bitsandbytes' own (`dequantize_4bit`), bit for bit."""
    import copy

    import bitsandbytes as bnb

    results = {}
    for quant_type in ("nf4", "fp4"):
        # 40 x 260 weights: not a whole number of the kernel's programs, nor of 64-weight blocks per row.
        weight = (torch.randn(40, 260) * 0.05).to(torch.bfloat16)
        params = bnb.nn.Params4bit(weight, requires_grad=False, quant_type=quant_type, compress_statistics=False)
        params = params.to(device)
        for dtype in (torch.float32, torch.bfloat16):
            state = copy.copy(params.quant_state)
            state.dtype = dtype
            theirs = bnb.functional.dequantize_4bit(params.data, state)
            ours = four_bit_dequantize(params.data, params.quant_state, dtype)
            # bfloat16: the same bits on a GPU; Triton's interpreter truncates float32 to bfloat16 (one step).
            name = "float32, same bits" if dtype == torch.float32 else "bfloat16"
            results[f"four_bit dequantise {quant_type} {name}"] = steps(ours, theirs)
    return results


def norm_quantize_cases(device: str) -> dict[str, float]:
    """The 8-bit step's add + norm with its int8 quantisation in one launch, against `add_rms_norm` then
    `quantize_rows`, bit for bit (0 steps), the outliers' int8 pieces too: rows with and without outliers, with and
    without the add, a width that is not a power of two, and six rows, where neither writes the outliers' lists."""
    from idefics2_worker.kernels import int8_quantize

    results = {}
    for dtype, threshold, with_delta, rows in (
        (torch.bfloat16, 6.0, True, 3),
        (torch.float32, 6.0, False, 3),
        (torch.bfloat16, 0.0, True, 3),
        (torch.bfloat16, 6.0, True, 6),
    ):
        dim = 320
        residual = (torch.randn(rows, 1, dim) * 2).to(dtype)
        residual[0, 0, [3, 77, 200]] = torch.tensor([90.0, -140.0, 60.0]).to(dtype)  # outliers once normed
        residual = residual.to(device)
        delta = (torch.randn(rows, 1, dim) * 2).to(dtype).to(device) if with_delta else None
        weight = (torch.rand(dim) + 0.5).to(dtype).to(device)
        hidden, normed = step_kernels.add_rms_norm(residual, delta, weight, 1e-5)
        theirs = int8_quantize.quantize_rows(normed.reshape(rows, dim), threshold)
        fused_hidden, fused_normed, ours = step_kernels.add_rms_norm_quantized(residual, delta, weight, 1e-5, threshold)
        if ours.columns is None or ours.counts is None or theirs.columns is None or theirs.counts is None:
            lists_same = all(a is None and b is None for a, b in zip(ours[2:5], theirs[2:5], strict=True))
        else:
            lists_same = (
                torch.equal(ours.outliers, theirs.outliers)
                and torch.equal(ours.counts, theirs.counts)
                and all(
                    torch.equal(ours.columns[r, : int(ours.counts[r])], theirs.columns[r, : int(theirs.counts[r])])
                    for r in range(rows)
                )
                and (threshold == 0.0 or int(ours.counts[0]) > 0)
            )
        same = (
            torch.equal(fused_hidden, hidden)
            and torch.equal(fused_normed, normed)
            and all(torch.equal(a, b) for a, b in zip(ours[:2], theirs[:2], strict=True))
            and lists_same
            and torch.equal(ours.pieces, theirs.pieces)
            and torch.equal(ours.piece_scales, theirs.piece_scales)
            and (threshold == 0.0 or bool(ours.piece_scales[0] > 0))
        )
        name = f"add + rms norm + int8 quantise {str(dtype).removeprefix('torch.')} threshold {threshold}"
        results[f"{name} {rows} rows, same bits"] = 0.0 if same else float("inf")
    return results


def split_sums_norm_cases(device: str) -> dict[str, float]:
    """The add + norm after a split product (o, down) adding the product's partial sums itself
    (`batch_invariant_matmul.split_linear`), against the product summed by its own kernel then the add + norm: the same
    bits (0 steps), with and without the bias, at one and three rows."""
    from idefics2_worker.kernels import batch_invariant_matmul

    results = {}
    for dtype, rows, with_bias in (
        (torch.bfloat16, 1, False),
        (torch.bfloat16, 3, True),
        (torch.float32, 3, False),
        (torch.float32, 1, True),
    ):
        width, inputs = 64, 2048
        x = torch.randn(rows, 1, inputs).to(dtype).to(device)
        weight = (torch.randn(width, inputs) * 0.05).to(dtype).to(device)
        bias = torch.randn(width).to(dtype).to(device) if with_bias else None
        residual = torch.randn(rows, 1, width).to(dtype).to(device)
        norm_weight = (torch.rand(width) + 0.5).to(dtype).to(device)
        sums = batch_invariant_matmul.split_linear(x, weight, bias)
        split = isinstance(sums, batch_invariant_matmul.SplitSums) and sums.partial.shape[0] > 1
        hidden, normed = step_kernels.add_rms_norm(
            residual, batch_invariant_matmul.linear(x, weight, bias), norm_weight, 1e-5
        )
        ours_hidden, ours_normed = step_kernels.add_rms_norm(residual, sums, norm_weight, 1e-5)
        same = split and torch.equal(ours_hidden, hidden) and torch.equal(ours_normed, normed)
        kind = f"{str(dtype).removeprefix('torch.')} {rows} rows{' bias' if with_bias else ''}"
        name = f"add + rms norm of split sums {kind}"
        results[f"{name}, same bits"] = 0.0 if same else float("inf")
    return results


def split_pieces_cases(device: str) -> dict[str, float]:
    """The pieces' MMA with K split, whose last split to finish adds the others' int32 sums, against the unsplit
    kernel, bit for bit: many launches in a row (each leaves its arrival counts zero for the next) and, on CUDA, the
    same launch replayed from a captured graph. On CUDA at idefics2-8b's q/k/v and down shapes and 8 rows, where the
    splits of a block finish in any order; in the interpreter, a small shape."""
    from idefics2_worker.kernels import int8_gemv, int8_quantize

    shapes = [(6144, 4096), (4096, 14336)] if device == "cuda" else [(192, 512)]
    repeats = 20 if device == "cuda" else 2
    results = {}
    for outputs, inputs in shapes:
        x = torch.randn(8, inputs).to(torch.bfloat16)
        x[:, ::97] *= 40.0  # outliers in every row
        q = int8_quantize.quantize_rows(x.to(device), 6.0)
        weight = torch.randint(-127, 128, (outputs, inputs), dtype=torch.int8, device=device)
        scales = (torch.rand(outputs) * 0.1).to(device)
        operands = (q.quantized, q.outliers, q.columns, q.counts, weight, q.stats, scales, torch.bfloat16)
        pieces = (q.pieces, q.piece_scales)
        split = int8_gemv.Tiling(128 if device == "cuda" else 64, 128, mma=True, pieces=True, splits=4)
        whole = int8_gemv.eight_bit_gemv(*operands, int8_gemv.Tiling(128, 128, mma=True, pieces=True), pieces=pieces)
        runs = [int8_gemv.eight_bit_gemv(*operands, split, pieces=pieces) for _ in range(repeats)]
        if device == "cuda":
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                replayed = int8_gemv.eight_bit_gemv(*operands, split, pieces=pieces)
            for _ in range(repeats):
                graph.replay()
                runs.append(replayed.clone())
        same = all(torch.equal(run, whole) for run in runs)
        results[f"int8 pieces K split in 4 {outputs}x{inputs}, same bits"] = 0.0 if same else float("inf")
    return results


def saturating_cast_cases(device: str) -> dict[str, float]:
    """The prefill's fp16 input cast against torch's clamp then cast, bit for bit (0 steps): values past the limit
    and past fp16's range, infinities, NaN, halfway cases and subnormals of fp16."""
    from idefics2_worker.decode.prefill_linears import FLOAT16_SATURATION

    special = [65280.0, 65281.0, 65504.0, 70000.0, 1e30, float("inf"), 3e-8, 6e-8, 1 + 2.0**-11, 1 + 3 * 2.0**-11]
    results = {}
    for dtype in (torch.bfloat16, torch.float32):
        values = torch.cat([torch.randn(5000) * 300, torch.tensor(special), -torch.tensor(special)]).to(dtype)
        values = torch.cat([values, torch.tensor([float("nan")], dtype=dtype)]).reshape(1, -1).to(device)
        ours = saturating_cast.saturating_float16(values, FLOAT16_SATURATION)
        theirs = values.clamp(-FLOAT16_SATURATION, FLOAT16_SATURATION).to(torch.float16)
        nan = theirs.isnan()
        # NaN's payload is the converter's choice; the rest, bit for bit.
        same = torch.equal(ours.isnan(), nan) and torch.equal(
            ours[~nan].view(torch.int16), theirs[~nan].view(torch.int16)
        )
        results[f"saturating float16 cast from {str(dtype).removeprefix('torch.')}, same bits"] = (
            0.0 if same else float("inf")
        )
    return results


def prefill_norm_cases(device: str) -> dict[str, float]:
    """The tiny model's text RMSNorms inside `FusedNorms.active()` (one kernel each) against their own forwards, on a
    prompt's worth of rows."""
    from transformers import AutoModelForImageTextToText

    from idefics2_worker.decode.prefill_norms import FusedNorms

    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = AutoModelForImageTextToText.from_pretrained(str(TINY_MODEL), dtype=dtype).to(device).eval()
        fused = FusedNorms(model, any_device=True)
        rows = torch.randn(1, 37, model.config.text_config.hidden_size, dtype=dtype, device=device) * 3
        own = [type(norm).forward(norm, rows) for norm in fused.modules]
        with torch.inference_mode(), fused.active():
            ours = [norm(rows) for norm in fused.modules]
        name = str(dtype).removeprefix("torch.")
        results[f"prefill rms norms {name}"] = max(steps(a, b) for a, b in zip(ours, own, strict=True))
    return results


def prefill_rotary_cases(device: str) -> dict[str, float]:
    """The tiny model's rotary embedding inside `FusedRotary.active()` (one kernel for a layer's queries and keys)
    against transformers' own, on a batched prefill's column slices of one q/k/v product, with cos and sin per row or
    shared by the batch; its results laid out as torch lays out the module code's; inputs it does not take left to
    the module's function."""
    from transformers import AutoModelForImageTextToText
    from transformers.models.mistral import modeling_mistral

    from idefics2_worker.decode.prefill_rotary import FusedRotary

    own = modeling_mistral.apply_rotary_pos_emb
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = AutoModelForImageTextToText.from_pretrained(str(TINY_MODEL), dtype=dtype).to(device).eval()
        config = model.config.text_config
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        dim = config.hidden_size // heads
        batch, length = 3, 37
        product = torch.randn(batch, length, (heads + 2 * kv_heads) * dim, dtype=dtype, device=device)
        query = product[..., : heads * dim].view(batch, length, heads, dim).transpose(1, 2)
        key = product[..., heads * dim : (heads + kv_heads) * dim].view(batch, length, kv_heads, dim).transpose(1, 2)
        rotary = model.model.text_model.rotary_emb
        shared = rotary(product, torch.arange(length, device=device)[None])
        per_row = rotary(product, torch.randint(0, 500, (batch, length), device=device))
        fused = FusedRotary(model, any_device=True)
        name = str(dtype).removeprefix("torch.")
        with torch.inference_mode(), fused.active():
            taken = modeling_mistral.apply_rotary_pos_emb is not own
            for label, (cos, sin) in (("shared", shared), ("per row", per_row)):
                ours = modeling_mistral.apply_rotary_pos_emb(query, key, cos, sin)
                theirs = own(query, key, cos, sin)
                results[f"prefill rotary, cos {label} {name}"] = max(
                    steps(a, b, floor=1.0) for a, b in zip(ours, theirs, strict=True)
                )
                laid_out = all(a.stride() == b.stride() for a, b in zip(ours, theirs, strict=True))
                results[f"prefill rotary, cos {label}, torch's layout, same bits {name}"] = 0.0 if laid_out else 1.0
            whole = query.contiguous()  # heads not side by side: the module's own function
            left = modeling_mistral.apply_rotary_pos_emb(whole, key, *shared)
            same = all(torch.equal(a, b) for a, b in zip(left, own(whole, key, *shared), strict=True))
            results[f"prefill rotary, other inputs to the module, same bits {name}"] = 0.0 if same and taken else 1.0
        back = modeling_mistral.apply_rotary_pos_emb is own
        results[f"prefill rotary given back, same bits {name}"] = 0.0 if back else 1.0
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    cases = {
        **four_bit_cases(args.device),
        **four_bit_cuda_cases(args.device),
        **eight_bit_cases(args.device),
        **step_cases(args.device),
        **int8_dequantize_cases(args.device),
        **four_bit_dequantize_cases(args.device),
        **saturating_cast_cases(args.device),
        **norm_quantize_cases(args.device),
        **split_sums_norm_cases(args.device),
        **split_pieces_cases(args.device),
        **prefill_norm_cases(args.device),
        **prefill_rotary_cases(args.device),
    }
    print(json.dumps(cases))


if __name__ == "__main__":
    main()
