#!/usr/bin/env python3
"""An 8-bit load with transformers' own quantisation and with the worker's (`int8_quantized_where_loaded`), compared.

In one process, alternated `--runs` times: `from_pretrained` with the reference program's arguments (device_map
"auto", `BitsAndBytesConfig(load_in_8bit=True)`), first with transformers' `Bnb8bitQuantize` as shipped (each
weight back to host memory, converted there and copied up again), then with the worker's conversion (bitsandbytes'
quantisation on the GPU the weight was loaded to). Reports each load's seconds (CUDA synchronised) and whether every
int8 weight and scale equals the stock load's bit for bit.

Usage: python scripts/gpu/check_int8_load.py --model DIR [--runs 2] [--out result.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
from idefics2_worker.engine.compat import int8_quantized_where_loaded


def timed_load(model_dir: str) -> tuple[float, Any]:
    from transformers import AutoModelForImageTextToText, BitsAndBytesConfig

    torch.cuda.synchronize()
    started = time.perf_counter()
    config = BitsAndBytesConfig(load_in_8bit=True)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, quantization_config=config, device_map="auto")
    torch.cuda.synchronize()
    return time.perf_counter() - started, model


def int8_weights(model: Any) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from bitsandbytes.nn import Int8Params

    return {name: (p.data, p.SCB) for name, p in model.named_parameters() if isinstance(p, Int8Params)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--out")
    args = parser.parse_args()
    from transformers.integrations import bitsandbytes as integration

    int8_quantized_where_loaded()
    where_loaded = integration.Bnb8bitQuantize.convert
    stock = where_loaded.__wrapped__
    seconds: dict[str, list[float]] = {"stock": [], "where_loaded": []}
    identical: list[bool] = []
    layers = 0
    for _ in range(args.runs):
        integration.Bnb8bitQuantize.convert = stock
        took, model = timed_load(args.model)
        seconds["stock"].append(round(took, 2))
        expected = int8_weights(model)
        integration.Bnb8bitQuantize.convert = where_loaded
        took, other = timed_load(args.model)
        seconds["where_loaded"].append(round(took, 2))
        got = int8_weights(other)
        layers = len(expected)
        identical.append(
            sorted(got) == sorted(expected)
            and all(torch.equal(got[k][0], w) and torch.equal(got[k][1], s) for k, (w, s) in expected.items())
        )
        print(json.dumps({"seconds": seconds, "identical": identical}), file=sys.stderr, flush=True)
        del model, other, expected, got
        gc.collect()
        torch.cuda.empty_cache()
    result = {
        "device": torch.cuda.get_device_name(0),
        "int8_layers": layers,
        "load_seconds_runs": seconds,
        "load_seconds_median": {k: round(statistics.median(v), 2) for k, v in seconds.items()},
        "int8_weights_identical": all(identical),
    }
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
