#!/usr/bin/env python3
"""Where a request's time to first token goes, and what each prefill lever saves (GPU).

For each quantization: the blog's inputs (its conversation, two pictures) are preprocessed as the worker does on
the CPU (PIL images, the torchvision processor on the CPU) and on the GPU (the same processor with `device=cuda`);
then the prefill runs under each plan, from the reference's (the vision tower one sub-image at a time, PyTorch's
attention choice, bitsandbytes' linears) to the fast decoder's (`PrefillPlan.fastest`), one lever added at a time.
Each time is the median of 5 after a warm-up, with the GPU synchronised; peak memory is torch's
max_memory_allocated above the model's own. A torch.profiler table of the first and last plan names the kernels
that take the time. Prints one JSON object keyed by quantization.

Usage: python scripts/gpu/profile_prefill.py --model DIR --messages FILE.json --image A --image B
           [--quantization 4bit --quantization 8bit --quantization bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_quantization import QUANTIZATIONS, from_pretrained_kwargs
from idefics2_worker.decode.prefill import VISION_TOWER, PrefillPlan, prefill
from idefics2_worker.decode.prefill_linears import TensorCoreLinears


def timed(run: Any, repeats: int = 5) -> tuple[float, Any]:
    run()
    torch.cuda.synchronize()
    times = []
    value = None
    for _ in range(repeats):
        started = time.perf_counter()
        value = run()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2), value


FASTEST = "+ sub-images without padding"
WORKER_PLAN = "fastest with the worker's GEMM dtypes (PrefillPlan.fastest)"


def plans(model: Any) -> dict[str, PrefillPlan]:
    tf32 = TensorCoreLinears(model)
    bf16 = TensorCoreLinears(model, {"": torch.bfloat16})
    return {
        "reference: vision 1 at a time, default attention, bnb linears": PrefillPlan(vision_chunk=1),
        "+ cuDNN attention allowed": PrefillPlan(vision_chunk=1, cudnn_attention=True),
        "+ vision tower in one batch": PrefillPlan(vision_chunk=None, cudnn_attention=True),
        "+ tensor-core linears, bf16 everywhere": PrefillPlan(vision_chunk=None, linears=bf16, cudnn_attention=True),
        "+ tensor-core linears, TF32 for float32 layers": PrefillPlan(
            vision_chunk=None, linears=tf32, cudnn_attention=True
        ),
        FASTEST: PrefillPlan(vision_chunk=None, linears=tf32, cudnn_attention=True, unpadded_vision=True),
        "fastest without cuDNN": PrefillPlan(vision_chunk=None, linears=tf32, unpadded_vision=True),
        WORKER_PLAN: PrefillPlan(
            vision_chunk=None,
            linears=PrefillPlan.fastest(model).linears,
            cudnn_attention=True,
            unpadded_vision=True,
        ),
        **{
            f"fastest, float32 layers: {label}": PrefillPlan(
                vision_chunk=None, linears=linears, cudnn_attention=True, unpadded_vision=True
            )
            for label, linears in gemm_variants(model).items()
        },
    }


def gemm_variants(model: Any) -> dict[str, TensorCoreLinears]:
    """Other GEMM dtypes for the float32-compute 4-bit layers than the worker's, judged by the profile and by
    gpu_parity.py."""
    return {
        "bf16 vision tower, TF32 text model (before)": TensorCoreLinears(model, {VISION_TOWER: torch.bfloat16}),
        "fp16 everywhere": TensorCoreLinears(model, {"": torch.float16}, exact_sums=True),
        "bf16 everywhere": TensorCoreLinears(model, {"": torch.bfloat16}),
    }


def kernel_table(run: Any, rows: int = 14) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.self_device_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_device_time_total, reverse=True)[:rows]
    return {
        "gpu_ms": round(total / 1000, 2),
        "top": [
            {"kernel": e.key[:110], "ms": round(e.self_device_time_total / 1000, 2), "calls": e.count} for e in top
        ],
    }


def profile_one(args: Any, quantization: str, processor: Any, prompt: str, pictures: list[Image.Image]) -> dict:
    load_started = time.perf_counter()
    model = AutoModelForImageTextToText.from_pretrained(
        args.model, device_map="cuda:0", **from_pretrained_kwargs(quantization)
    )
    load_s = round(time.perf_counter() - load_started, 2)
    device = model.device
    result: dict[str, Any] = {"load_s": load_s, "dtype": str(model.dtype)}

    cpu_ms, cpu_inputs = timed(lambda: processor(text=prompt, images=pictures, return_tensors="pt").to(device))

    def on_gpu() -> Any:
        return processor(text=prompt, images=pictures, return_tensors="pt", device=device).to(device)

    gpu_ms, gpu_inputs = timed(on_gpu)
    pixel_diff = (cpu_inputs["pixel_values"].float() - gpu_inputs["pixel_values"].float()).abs().max().item()
    result["preprocess_ms"] = {"cpu (PIL images, as today)": cpu_ms, "gpu (PIL images, device=cuda)": gpu_ms}
    result["pixel_values_max_abs_diff_gpu_vs_cpu"] = round(pixel_diff, 6)
    result["prompt_tokens"] = int(cpu_inputs["input_ids"].shape[1])
    result["sub_images"] = int(cpu_inputs["pixel_values"].shape[1])

    base_memory = torch.cuda.memory_allocated(device)
    result["prefill_ms"] = {}
    result["prefill_peak_gb"] = {}
    reference_logits = None
    result["first_logits_max_abs_diff_vs_reference_plan"] = {}
    for name, plan in plans(model).items():
        torch.cuda.reset_peak_memory_stats(device)
        ms, (cache, logits) = timed(lambda plan=plan: prefill(model, cpu_inputs, plan))
        del cache
        result["prefill_ms"][name] = ms
        result["prefill_peak_gb"][name] = round((torch.cuda.max_memory_allocated(device) - base_memory) / 1e9, 2)
        if reference_logits is None:
            reference_logits = logits
        result["first_logits_max_abs_diff_vs_reference_plan"][name] = round(
            (logits - reference_logits).abs().max().item(), 4
        )
        print(quantization, name, ms, file=sys.stderr)

    fastest = PrefillPlan.fastest(model)
    result["ttft_estimate_ms"] = {
        "today (cpu preprocess + reference plan)": round(cpu_ms + next(iter(result["prefill_ms"].values())), 1),
        "fastest (gpu preprocess + fastest plan)": round(gpu_ms + result["prefill_ms"][WORKER_PLAN], 1),
    }
    result["profile_reference_plan"] = kernel_table(lambda: prefill(model, cpu_inputs, PrefillPlan(vision_chunk=1)))
    result["profile_fastest_plan"] = kernel_table(lambda: prefill(model, gpu_inputs, fastest))
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--messages", required=True)
    parser.add_argument("--image", action="append", default=[])
    parser.add_argument("--quantization", action="append", choices=sorted(QUANTIZATIONS))
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with contextlib.redirect_stdout(sys.stderr):
        pictures = [Image.open(path).convert("RGB") for path in args.image]
        with open(args.messages, encoding="utf-8") as f:
            messages = json.load(f)
        processor = AutoProcessor.from_pretrained(args.model)
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        results["image_processor"] = type(processor.image_processor).__name__
        for quantization in args.quantization or ["4bit", "8bit", "bf16"]:
            results[quantization] = profile_one(args, quantization, processor, prompt, pictures)
            gc.collect()
            torch.cuda.empty_cache()
            print(quantization, json.dumps(results[quantization])[:400], file=sys.stderr)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
