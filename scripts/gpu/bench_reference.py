#!/usr/bin/env python3
"""The reference program (scripts/reference/reference.py: the blog's calls), timed for the GPU benchmark.

Loads the model once as the blog does (device_map="auto"; 8-bit/4-bit through BitsAndBytesConfig, bf16
through dtype), then for each image-splitting setting: a warm-up, 1-token generates (prefill: the median of
PREFILL_RUNS, with their range), and a fixed-length greedy generate (min_new_tokens = max_new_tokens). Prints one
JSON object on stdout.

Its spans match the SDK's load, which starts before the worker's Python does: `importS` runs from the process's
start (Linux: the kernel's record of it; elsewhere from this file's first line) to the imports' end, and `loadS`
covers the processor and the model's from_pretrained, CUDA's setup included (the first CUDA call makes it).

Usage: python scripts/gpu/bench_reference.py --model DIR --messages FILE.json --image A --image B
           --quantization bf16|8bit|4bit [--new-tokens 128] [--splitting on --splitting off]
"""

from __future__ import annotations

import time

# The blog's program pays for its imports too: the SDK's load includes its worker's, so both are reported.
IMPORTS_STARTED = time.perf_counter()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402
from transformers.image_utils import load_image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
from benchmark_quantization import QUANTIZATIONS, from_pretrained_kwargs  # noqa: E402
from idefics2_worker.engine.compat import expose_pil_image_processor  # noqa: E402

# One-token calls per prefill figure: a single call's time moved by 10-40% between calls and machines (BENCHMARKS.md,
# 2026-12-01 evening), so the tables give the median and the range.
PREFILL_RUNS = 5


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def seconds_since_process_start() -> float:
    """From this process's start to now: the kernel's start time where Linux gives it (the interpreter's own start-up
    included), else from this file's first line."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - IMPORTS_STARTED


def timed(fn):
    synchronize()
    started = time.perf_counter()
    result = fn()
    synchronize()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--messages", required=True)
    parser.add_argument("--image", action="append", default=[])
    parser.add_argument("--quantization", choices=sorted(QUANTIZATIONS), required=True)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--splitting", action="append", choices=["on", "off"])
    args = parser.parse_args()
    import_seconds = seconds_since_process_start()
    # As in scripts/reference/reference.py: without torchvision, transformers 5.17 hides the PIL image processor.
    expose_pil_image_processor()

    with contextlib.redirect_stdout(sys.stderr):
        images = [load_image(source) for source in args.image]
        with open(args.messages, encoding="utf-8") as f:
            messages = json.load(f)
        splittings = args.splitting or ["on"]
        # Not `timed`: its synchronize would set up CUDA before the clock starts.
        started = time.perf_counter()
        first_processor = AutoProcessor.from_pretrained(args.model, do_image_splitting=splittings[0] == "on")
        model = AutoModelForImageTextToText.from_pretrained(
            args.model, device_map="auto", **from_pretrained_kwargs(args.quantization)
        )
        synchronize()
        load_seconds = time.perf_counter() - started
        cases = {}
        for splitting in splittings:
            if splitting == splittings[0]:
                processor = first_processor
            else:
                processor = AutoProcessor.from_pretrained(args.model, do_image_splitting=splitting == "on")
            prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
            inputs = processor(text=prompt, images=images or None, return_tensors="pt").to(model.device)
            prompt_tokens = inputs["input_ids"].shape[1]

            def generate(n, inputs=inputs):
                return model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)

            generate(2)
            prefills = sorted(timed(lambda: generate(1))[1] for _ in range(PREFILL_RUNS))
            prefill = prefills[len(prefills) // 2]
            output, total = timed(lambda: generate(args.new_tokens))
            cases[splitting] = {
                "promptTokens": prompt_tokens,
                "prefillMs": round(prefill * 1000, 1),
                "prefillMsRange": [round(prefills[0] * 1000, 1), round(prefills[-1] * 1000, 1)],
                "decodeTokS": round((args.new_tokens - 1) / (total - prefill), 2),
                "tokenIds": output[0, prompt_tokens:].tolist(),
                "peakVramGb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if torch.cuda.is_available() else None,
            }
    print(
        json.dumps(
            {
                "quantization": args.quantization,
                "loadS": round(load_seconds, 1),
                "importS": round(import_seconds, 1),
                "cases": cases,
            }
        )
    )


if __name__ == "__main__":
    main()
