#!/usr/bin/env python3
"""Teacher-forced parity of the worker's decode paths against the reference's, per quantization (GPU).

The reference (the blog's calls, PyTorch's default SDPA choice) generates N greedy tokens. Then the same model
decodes those tokens step by step (prefill, then one token at a time with the KV cache, as generate does): with the
default choice (the reference), with the math kernel, with the worker's `decoder: "reference"` path
(`fastest_attention`: cuDNN ruled out) and with its default `decoder: "fast"` path (its prefill as
`PrefillPlan.fastest` plans it: pictures preprocessed on the GPU, the vision tower in one batch, cuDNN attention
allowed, quantized linears on the tensor cores; then the slot KV cache and CUDA-graph replay). The spread between
two kernels the worker does not use (default vs math) is the precision's noise; a worker path passes when its
per-step logits are within that noise of the reference's, and its top-1 token agrees wherever the reference's
top-1/top-2 margin exceeds it. The fast path is judged at one row and with its step computing 8 rows (the same
sequence in each: the kernels a busy server's batch runs); `parity_ok` needs both. Prints one JSON object, keyed by
quantization, with the fast path's one-row figures at the top level of each.

Usage: python scripts/gpu/gpu_parity.py --model DIR --messages FILE.json --image A --image B [--new-tokens 128]
           [--quantization bf16 --quantization 8bit --quantization 4bit]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.image_utils import load_image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
from benchmark_quantization import QUANTIZATIONS, from_pretrained_kwargs
from idefics2_worker.decode.prefill import PrefillPlan
from idefics2_worker.decode.teacher_forcing import fast_path_logits
from idefics2_worker.engine.attention import fastest_attention
from idefics2_worker.engine.teacher_forced_parity import forced_logits
from profile_prefill import gemm_variants


def device_inputs(processor, prompt, images, model):
    """The inputs as the worker's fast path makes them (pictures preprocessed on the GPU), or None where it cannot."""
    from transformers.image_processing_backends import TorchvisionBackend

    if not images or not isinstance(processor.image_processor, TorchvisionBackend):
        return None
    return processor(text=prompt, images=images, return_tensors="pt", device=model.device).to(model.device)


def compare(candidate: torch.Tensor, reference: torch.Tensor, noise_abs: float) -> dict:
    diff = (candidate - reference).abs()
    rel = (diff.norm(dim=-1) / reference.norm(dim=-1)).max().item()
    top2 = reference.topk(2, dim=-1).values
    decisive = (top2[:, 0] - top2[:, 1]) > noise_abs
    agree = candidate.argmax(-1) == reference.argmax(-1)
    return {
        "max_abs_logit_err": round(diff.max().item(), 4),
        "max_rel_logit_err": round(rel, 5),
        "decisive_steps": int(decisive.sum()),
        "top1_agreement": round(agree[decisive].float().mean().item(), 4) if decisive.any() else None,
        "top1_agreement_all_steps": round(agree.float().mean().item(), 4),
    }


def judged(result: dict, noise: dict) -> dict:
    # Within noise: no larger than the spread between two kernels the worker does not use, with top-1
    # agreement wherever the reference's margin exceeds that spread.
    result["parity_ok"] = bool(
        result["max_abs_logit_err"] <= max(noise["max_abs_logit_err"], 1e-6) * 1.5
        and (result["top1_agreement"] in (None, 1.0))
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--messages", required=True)
    parser.add_argument("--image", action="append", default=[])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--quantization", action="append", choices=sorted(QUANTIZATIONS))
    args = parser.parse_args()

    results = {}
    with contextlib.redirect_stdout(sys.stderr):
        images = [load_image(source) for source in args.image]
        with open(args.messages, encoding="utf-8") as f:
            messages = json.load(f)
        processor = AutoProcessor.from_pretrained(args.model)
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        for quantization in args.quantization or ["bf16", "8bit", "4bit"]:
            load = from_pretrained_kwargs(quantization)
            model = AutoModelForImageTextToText.from_pretrained(args.model, device_map="auto", **load)
            inputs = processor(text=prompt, images=images or None, return_tensors="pt").to(model.device)
            n = args.new_tokens
            generated = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
            tokens = generated[0, inputs["input_ids"].shape[1] :].tolist()
            reference = forced_logits(model, inputs, tokens, contextlib.nullcontext)
            worker = forced_logits(model, inputs, tokens, lambda m=model: fastest_attention(m))
            math = forced_logits(model, inputs, tokens, lambda: sdpa_kernel([SDPBackend.MATH]))
            noise = compare(math, reference, 0.0)
            # The worker preprocesses on the GPU when its image processor can: judged on those inputs, and on
            # the reference's own inputs too.
            worker_inputs = device_inputs(processor, prompt, images, model) or inputs
            fast = fast_path_logits(model, worker_inputs, tokens)
            result = judged(compare(fast, reference, noise["max_abs_logit_err"]), noise)
            fast_cpu = fast_path_logits(model, inputs, tokens)
            result["fast_cpu_preprocessed"] = judged(compare(fast_cpu, reference, noise["max_abs_logit_err"]), noise)
            # The step's kernels for 8 rows (a busy server's batch), the same sequence in every row.
            fast_8 = fast_path_logits(model, worker_inputs, tokens, copies=8)
            result["fast_8_rows"] = judged(compare(fast_8, reference, noise["max_abs_logit_err"]), noise)
            result["parity_ok"] = result["parity_ok"] and result["fast_8_rows"]["parity_ok"]
            if quantization == "4bit":
                # Other GEMM dtypes for float32-compute layers, judged beside the ones the worker uses.
                for label, linears in gemm_variants(model).items():
                    plan = PrefillPlan.fastest(model)
                    plan.linears = linears
                    variant = fast_path_logits(model, worker_inputs, tokens, plan=plan)
                    key = f"fast_gemms: {label}"
                    result[key] = judged(compare(variant, reference, noise["max_abs_logit_err"]), noise)
            result["reference_decoder"] = judged(compare(worker, reference, noise["max_abs_logit_err"]), noise)
            result["noise_math_vs_reference"] = noise
            results[quantization] = result
            print(quantization, json.dumps(result), file=sys.stderr)
            del model
            torch.cuda.empty_cache()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
