#!/usr/bin/env python3
"""Batched prefill on a GPU: what one forward of several queued requests saves, and that each row's logits are
its own prefill's within the precision's noise.

Loads the model as the worker does (`Engine.load`: the fast decoder and its prefill plan), prepares the blog request
(its conversation and pictures), then times 1, 2, 4 and 8 copies prefilled one at a time (`prefill`) against one
batched forward (`prefill_many`), best of 3 each, and compares every row's first-token logits with the request's
own prefill: largest absolute difference and top-1. A mixed group (the blog request, a text-only one, and the blog
conversation with one picture) is compared the same way. The noise to judge against is `gpu_parity.py`'s, for the
same quantization (math vs default SDPA kernel, ~0.44 at bf16 and 4-bit on an H200).

Usage: python scripts/gpu/check_batched_prefill.py --model DIR --messages FILE.json --image A --image B
           [--quantization bf16|8bit|4bit] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from transformers.image_utils import load_image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python" / "tests"))
from benchmark_quantization import QUANTIZATIONS
from demo_inputs import as_payload
from idefics2_worker.decode.prefill import prefill, prefill_many
from idefics2_worker.engine.engine import Engine
from idefics2_worker.protocol.params import parse_generate, parse_load
from idefics2_worker.request.prompt import prepare_prompt


def load(model: str, quantization: str, steps: list[tuple[str, float]] | None = None) -> Engine:
    """The model loaded as the worker loads it; `steps` gets each load step's message and its start (s)."""
    mode = "none" if quantization == "bf16" else quantization
    params: dict[str, Any] = {"model": model, "quantization": {"mode": mode}, "decoder": "fast", "maxBatchSize": 8}
    params |= {"dtype": "bfloat16"} if quantization == "bf16" else {}
    engine = Engine()
    started = time.perf_counter()

    def on_progress(_stage: str, message: str, **counts: Any) -> None:
        if steps is not None and counts.get("done") is None:  # a step's start, not a count of its work
            steps.append((message, round(time.perf_counter() - started, 2)))

    engine.load(parse_load(params), threading.Event(), on_progress)
    if steps is not None:
        steps.append(("ready", round(time.perf_counter() - started, 2)))
    return engine


def add_conversation_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, and the conversation (--messages, a JSON file) with its pictures (--image, repeated)."""
    parser.add_argument("--model", required=True)
    parser.add_argument("--messages", required=True)
    parser.add_argument("--image", action="append", default=[])


def conversation(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[Any]]:
    """The messages and the loaded pictures that `add_conversation_arguments` names."""
    return json.loads(Path(args.messages).read_text(encoding="utf-8")), [load_image(path) for path in args.image]


def prepared(engine: Engine, messages: list[dict[str, Any]], images: list[Any]) -> Any:
    specs, payload = as_payload(images)
    params = parse_generate({"messages": messages, "images": specs, "options": {"maxNewTokens": 1}}, len(payload))
    on_device = engine.batch.plan.preprocess_on_device
    return prepare_prompt(engine.loaded, params, payload, on_device=on_device).inputs


def wall_ms(run: Any, repeats: int = 3) -> list[float]:
    """Each of `repeats` calls' wall time (ms), the GPU synchronised before and after."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return times


def best_ms(run: Any, repeats: int = 3) -> float:
    return round(min(wall_ms(run, repeats)), 1)


def compared(engine: Engine, group: list[Any], pad_id: int) -> dict[str, Any]:
    model, plan = engine.loaded.model, engine.batch.plan
    alone = torch.cat([prefill(model, inputs, plan)[1] for inputs in group])
    _, together, _ = prefill_many(model, group, plan, pad_id)
    return {
        "max_abs_logit_diff": round((alone - together).abs().max().item(), 4),
        "top1_equal": bool(torch.equal(alone.argmax(-1), together.argmax(-1))),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    add_conversation_arguments(parser)
    parser.add_argument("--quantization", choices=sorted(QUANTIZATIONS), default="bf16")
    parser.add_argument("--out")
    args = parser.parse_args()
    engine = load(args.model, args.quantization)
    model, plan = engine.loaded.model, engine.batch.plan
    pad = getattr(engine.loaded.processor.tokenizer, "pad_token_id", None) or 0
    messages, images = conversation(args)
    blog = prepared(engine, messages, images)
    text_only = prepared(engine, [{"role": "user", "content": [{"type": "text", "text": "Why is the sky blue?"}]}], [])
    one_picture = prepared(engine, messages[:1], images[:1])
    result: dict[str, Any] = {"quantization": args.quantization, "card": torch.cuda.get_device_name()}
    result["prompt_tokens"] = int(blog["input_ids"].shape[-1])
    prefill(model, blog, plan)  # compiles / warms the kernels
    prefill_many(model, [blog, blog], plan, pad)
    timings = []
    for count in (1, 2, 4, 8):
        group = [blog] * count
        one_by_one = best_ms(lambda group=group: [prefill(model, inputs, plan) for inputs in group])
        together = best_ms(lambda group=group: prefill_many(model, group, plan, pad))
        timings.append({"requests": count, "one_at_a_time_ms": one_by_one, "batched_ms": together})
        print(f"{count} blog requests: one at a time {one_by_one} ms, batched {together} ms", flush=True)
        torch.cuda.empty_cache()
    result["timings"] = timings
    result["peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    result["same_requests"] = compared(engine, [blog] * 4, pad)
    result["mixed_requests"] = compared(engine, [blog, text_only, one_picture], pad)
    print(json.dumps(result), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
