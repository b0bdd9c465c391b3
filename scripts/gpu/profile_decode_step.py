#!/usr/bin/env python3
"""Where one decode step's time goes (GPU): the worker's fast decoder on a real-sized model, per quantization.

Loads the model as the SDK does, prefills the blog-sized prompt, then times the captured step (graph replay,
ms per step at batch 1 and 8) and profiles eager steps at 1 and 8 rows, printing the GPU kernels that take the
most time and the number of kernels per step. The same step made of the model's own modules (`kernels=False`: no
fused step kernels, bitsandbytes' own 4-bit kernel) is timed beside it. Prints one JSON line per quantization at
the end.

Usage: python scripts/gpu/profile_decode_step.py --model DIR [--quantization bf16 --quantization 4bit ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
from idefics2_worker.decode.graphs import DecodeGraphs
from idefics2_worker.engine.engine import Engine
from idefics2_worker.protocol.params import parse_load

LOADS = {
    "bf16": {"mode": "none", "dtype": "bfloat16"},
    "8bit": {"mode": "8bit"},
    "4bit": {"mode": "4bit", "quantType": "nf4"},
}


def load(model: str, quantization: str) -> Engine:
    spec = LOADS[quantization]
    params = {"model": model, "quantization": {"mode": spec["mode"], "quantType": spec.get("quantType")}}
    params |= {"dtype": spec.get("dtype", "auto"), "decoder": "fast", "deviceMap": "cuda:0"}
    engine = Engine()
    engine.load(parse_load(params), threading.Event(), lambda *_: None)
    return engine


def prepare(graphs: DecodeGraphs) -> None:
    """Eight rows at position 900 of a 1,024-position cache, each attending to 900 positions before it."""
    graphs.ensure(8, 1024)
    for row in range(8):
        graphs.mask[row, :, :, :900] = True
    graphs.tokens[:8] = 100
    graphs.positions[:8] = 900


def replay_ms(graphs, count: int, steps: int = 50) -> float:
    graphs.run(count)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        graphs.run(count)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000 / steps


def eager_kernel_totals(graphs: DecodeGraphs, count: int, steps: int = 5) -> dict[str, list[float]]:
    """GPU µs and launches per eager step of `count` rows, per kernel name."""
    with torch.inference_mode():
        for _ in range(3):
            graphs.decode_one_token(count)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                graphs.decode_one_token(count)
            torch.cuda.synchronize()
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            totals[event.name][0] += event.device_time / steps
            totals[event.name][1] += 1 / steps
    return totals


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--quantization", action="append", choices=sorted(LOADS))
    args = parser.parse_args()
    summaries = []
    for quantization in args.quantization or ["bf16", "4bit", "8bit"]:
        engine = load(args.model, quantization)
        summary = {"quantization": quantization, "dtype": str(engine.loaded.model.dtype)}
        modules = DecodeGraphs(engine.loaded.model, 8, use_graphs=True, kernels=False)
        prepare(modules)
        summary["modules_graph_ms_batch1"] = round(replay_ms(modules, 1), 3)
        summary["modules_graph_ms_batch8"] = round(replay_ms(modules, 8), 3)
        modules.release()
        del modules
        graphs = engine.batch.graphs
        prepare(graphs)
        summary["fused"] = graphs.fused
        summary["four_bit_kernel_layers"] = len(graphs.linears.four_bit)
        summary["graph_ms_batch1"] = round(replay_ms(graphs, 1), 3)
        summary["graph_ms_batch8"] = round(replay_ms(graphs, 8), 3)
        tops = {}
        for count in (1, 8):
            totals = eager_kernel_totals(graphs, count)
            ranked = sorted(totals.items(), key=lambda kv: -kv[1][0])
            summary[f"eager_gpu_ms_per_step_batch{count}"] = round(sum(v[0] for v in totals.values()) / 1000, 3)
            summary[f"kernels_per_step_batch{count}"] = round(sum(v[1] for v in totals.values()))
            tops[count] = ranked[:18]
        print(f"\n{quantization}: {json.dumps(summary)}", flush=True)
        for count, ranked in tops.items():
            print(f"  batch {count}:", flush=True)
            for name, (us, calls) in ranked:
                print(f"  {us / 1000:8.3f} ms  {calls:6.0f}x  {name[:110]}", flush=True)
        summaries.append(summary)
        del engine, graphs
        torch.cuda.empty_cache()
    for summary in summaries:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
