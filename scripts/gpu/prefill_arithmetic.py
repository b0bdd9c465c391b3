#!/usr/bin/env python3
"""The blog prefill's arithmetic against the card's (GPU): what a request's prefill must cost at the least.

Loads the model as the worker does (`Engine.load`, the fast decoder's plan), prepares the blog request, then:
- counts the FLOPs of one prefill (torch's FlopCounterMode over the worker's prefill, the vision tower eager so
  that its work is seen), by operator and by module;
- times the worker's prefill of 1 and of --requests copies in one forward (median of --runs), and gives the rate
  that makes of the counted FLOPs;
- times the card at the prefill's own shapes: every linear's GEMM (bf16, rows = the batch's patches or tokens),
  the vision tower's attention (its heads and head size, at each sub-image size) with each SDPA backend, and a
  large square bf16 GEMM as the card's reference rate;
- times the vision MLP's first linear with its tanh-GELU as two kernels (the model's) against cuBLASLt's GELU
  epilogue (`torch._addmm_activation`), with their largest difference.
The FLOPs are the same at every quantization (the prefill's quantized linears multiply dequantised weights), so the
counts of a bf16 load hold for all three.

Usage: python scripts/gpu/prefill_arithmetic.py --model DIR --messages FILE.json --image A --image B
           [--quantization bf16] [--requests 8] [--runs 3] [--out result.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_quantization import QUANTIZATIONS
from check_batched_prefill import add_conversation_arguments, conversation, load, prepared, wall_ms
from idefics2_worker.decode.prefill import prefill, prefill_many

TERA = 1e12


def gpu_ms(fn: Callable[[], object], calls: int = 10, repeats: int = 5) -> float:
    """Median milliseconds per call over `repeats` timings of `calls` calls, after a warm-up."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def _attention_flops(query_shape: Any, key_shape: Any, value_shape: Any) -> int:
    """torch's count (QK^T and PV, every query against every key) with grouped-query attention's fewer key/value
    heads allowed: torch's own asserts equal heads. The text model's causal attention is counted whole."""
    batch, heads, queries, head = query_shape
    *_, keys, value_head = value_shape
    return 2 * batch * heads * queries * keys * (head + value_head)


def counted_flops(model: Any, inputs: Any, plan: Any) -> dict[str, Any]:
    """FLOPs of one prefill, by operator and by module (not per layer)."""
    eager = dataclasses.replace(plan, vision_graphs=None)
    # The counter's module tracker hooks the gradients of inputs that require them, which inference mode refuses.
    trainable = [p for p in model.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    counted = flop_counter.sdpa_flop_count
    flop_counter.sdpa_flop_count = _attention_flops
    try:
        with FlopCounterMode(display=False) as counter:
            prefill(model, inputs, eager)
    finally:
        flop_counter.sdpa_flop_count = counted
        for parameter in trainable:
            parameter.requires_grad_(True)
    by_operator: Counter[str] = Counter()
    for operator, flops in counter.get_flop_counts().get("Global", {}).items():
        by_operator[str(operator)] += int(flops)
    by_module = {
        name: round(sum(int(f) for f in ops.values()) / TERA, 3)
        for name, ops in counter.get_flop_counts().items()
        if name != "Global" and ".layers." not in name and name.count(".") <= 3
    }
    return {
        "tflop": round(counter.get_total_flops() / TERA, 3),
        "tflop_by_operator": {k: round(v / TERA, 3) for k, v in by_operator.most_common()},
        "tflop_by_module": by_module,
    }


def timed_prefills(engine: Any, inputs: Any, requests: int, runs: int) -> dict[str, float]:
    model, plan = engine.loaded.model, engine.batch.plan
    pad = getattr(engine.loaded.processor.tokenizer, "pad_token_id", None) or 0
    result = {}
    for count in sorted({1, requests}):
        group = [inputs] * count

        def run(group: list[Any] = group) -> object:
            return prefill(model, group[0], plan) if len(group) == 1 else prefill_many(model, group, plan, pad)

        run()
        result[str(count)] = round(statistics.median(wall_ms(run, runs)), 1)
        torch.cuda.empty_cache()
    return result


def sub_image_patches(inputs: Any, patch: int) -> list[int]:
    """Each sub-image's whole patches (the unpadded prefill's rows per sub-image)."""
    mask = inputs["pixel_attention_mask"].reshape(-1, *inputs["pixel_attention_mask"].shape[-2:])
    heights = mask.any(dim=2).sum(dim=1).tolist()
    widths = mask.any(dim=1).sum(dim=1).tolist()
    return [(int(h) // patch) * (int(w) // patch) for h, w in zip(heights, widths, strict=True) if h and w]


def gemm_rates(model: Any, patches: int, tokens: int) -> list[dict[str, Any]]:
    """bf16 GEMM time and rate for each linear shape of the prefill, at its rows (patches or tokens)."""
    vision = model.config.vision_config
    text = model.config.text_config
    kv = text.num_key_value_heads * (text.hidden_size // text.num_attention_heads)
    shapes = [
        ("vision q/k/v/o (each)", patches, vision.hidden_size, vision.hidden_size),
        ("vision fc1", patches, vision.hidden_size, vision.intermediate_size),
        ("vision fc2", patches, vision.intermediate_size, vision.hidden_size),
        ("connector up/gate (each)", patches, vision.hidden_size, text.intermediate_size),
        ("connector down", patches, text.intermediate_size, text.hidden_size),
        ("text q/o (each)", tokens, text.hidden_size, text.hidden_size),
        ("text k/v (each)", tokens, text.hidden_size, kv),
        ("text gate/up (each)", tokens, text.hidden_size, text.intermediate_size),
        ("text down", tokens, text.intermediate_size, text.hidden_size),
        ("square 8192 (the card's reference)", 8192, 8192, 8192),
    ]
    rows = []
    for name, m, k, n in shapes:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
        ms = gpu_ms(lambda x=x, w=w: functional.linear(x, w))
        rows.append(
            {"gemm": name, "m": m, "k": k, "n": n, "ms": round(ms, 3), "tflops": round(2 * m * k * n / ms / 1e9, 1)}
        )
        del x, w
    return rows


def attention_rates(model: Any, sizes: Counter[int]) -> list[dict[str, Any]]:
    """The vision tower's attention, one layer, at each sub-image size: each SDPA backend, and head sizes padded."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    vision = model.config.vision_config
    heads = vision.num_attention_heads
    head = vision.hidden_size // heads
    rows = []
    for length, count in sorted(sizes.items()):
        for padded in sorted({head, 80, 96, 128}):
            q, k, v = (torch.randn(count, heads, length, padded, device="cuda", dtype=torch.bfloat16) for _ in "qkv")
            for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
                try:
                    with sdpa_kernel([backend]):
                        ms = gpu_ms(lambda q=q, k=k, v=v: functional.scaled_dot_product_attention(q, k, v))
                except RuntimeError as error:
                    rows.append(
                        {
                            "length": length,
                            "sub_images": count,
                            "head": padded,
                            "backend": backend.name,
                            "error": str(error).splitlines()[0][:160],
                        }
                    )
                    continue
                useful = 4 * count * heads * length * length * head
                rows.append(
                    {
                        "length": length,
                        "sub_images": count,
                        "head": padded,
                        "backend": backend.name,
                        "ms": round(ms, 3),
                        "useful_tflops": round(useful / ms / 1e9, 1),
                    }
                )
            del q, k, v
    return rows


def gelu_epilogue(model: Any, patches: int) -> dict[str, Any]:
    """The vision MLP's fc1 + tanh-GELU: two kernels against cuBLASLt's GELU epilogue."""
    vision = model.config.vision_config
    x = torch.randn(patches, vision.hidden_size, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(vision.intermediate_size, vision.hidden_size, device="cuda", dtype=torch.bfloat16) * 0.03
    b = torch.randn(vision.intermediate_size, device="cuda", dtype=torch.bfloat16) * 0.03
    two = gpu_ms(lambda: functional.gelu(functional.linear(x, w, b), approximate="tanh"))
    fused = gpu_ms(lambda: torch._addmm_activation(b, x, w.t(), use_gelu=True))
    reference = functional.gelu(functional.linear(x, w, b), approximate="tanh")
    difference = (torch._addmm_activation(b, x, w.t(), use_gelu=True).float() - reference.float()).abs()
    return {
        "rows": patches,
        "two_kernels_ms": round(two, 3),
        "epilogue_ms": round(fused, 3),
        "max_abs_diff": round(difference.max().item(), 5),
        "bf16_step_at_max": round(reference.float().abs().max().item() * 2**-8, 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    add_conversation_arguments(parser)
    parser.add_argument("--quantization", choices=sorted(QUANTIZATIONS), default="bf16")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    engine = load(args.model, args.quantization)
    model, plan = engine.loaded.model, engine.batch.plan
    messages, images = conversation(args)
    inputs = prepared(engine, messages, images)
    patch = int(model.config.vision_config.patch_size)
    sizes = Counter(sub_image_patches(inputs, patch))
    patches, tokens = sum(n * c for n, c in sizes.items()), int(inputs["input_ids"].shape[-1])
    result: dict[str, Any] = {
        "card": torch.cuda.get_device_name(),
        "quantization": args.quantization,
        "prompt_tokens": tokens,
        "sub_image_patches": {str(n): c for n, c in sorted(sizes.items())},
        "patches": patches,
    }
    result["flops"] = counted_flops(model, inputs, plan)
    print(json.dumps(result["flops"]), flush=True)
    result["prefill_ms"] = timed_prefills(engine, inputs, args.requests, args.runs)
    tflop = result["flops"]["tflop"]
    result["prefill_tflops"] = {n: round(tflop * int(n) / (ms / 1000), 1) for n, ms in result["prefill_ms"].items()}
    print(json.dumps({"prefill_ms": result["prefill_ms"], "tflops": result["prefill_tflops"]}), flush=True)
    result["gemms"] = gemm_rates(model, patches * args.requests, tokens * args.requests)
    for row in result["gemms"]:
        shape = f"{row['m']:>7} x {row['k']:>5} x {row['n']:>5}"
        print(f"{row['gemm']:<36} {shape}  {row['ms']:>8} ms  {row['tflops']} TFLOPS")
    result["vision_attention"] = attention_rates(model, Counter({n: c * args.requests for n, c in sizes.items()}))
    for row in result["vision_attention"]:
        print(json.dumps(row), flush=True)
    result["gelu_epilogue"] = gelu_epilogue(model, patches * args.requests)
    print(json.dumps(result["gelu_epilogue"]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
