#!/usr/bin/env python3
"""A decode step's token choice for rows whose only processor holds EOS back until a length (`minNewTokens`, as the
benchmark's requests ask for): each row through its processors (`_choice`, how `chosen_tokens` chose them before
change 72) against `chosen_tokens`' one pass over the rows. On CUDA or the CPU.

Per row count and way: the host's time a step (wall, synchronised every step) and the operators it ran (the torch
profiler's aten calls, each a kernel on a GPU), over idefics2-8b's vocabulary (32,003) in float32, as the step's
logits come. Prints a table; --out writes JSON.

Usage: python scripts/gpu/bench_token_choice.py [--device cuda] [--rows 1 8] [--steps 200] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from statistics import median

import torch
from torch.profiler import ProfilerActivity, profile
from transformers.generation.logits_process import LogitsProcessorList, MinNewTokensLengthLogitsProcessor

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
from idefics2_worker.decode.token_choice import TokenHistory, _choice, chosen_tokens

VOCABULARY = 32003
EOS = [2, 32002]


def requests(count: int, device: torch.device) -> list[tuple[LogitsProcessorList, TokenHistory, None]]:
    """`count` requests of 20 prompt tokens asking for at least 128 new ones, sharing their EOS tensor as requests
    with the same arguments do (PreparedGenerationConfigs)."""
    eos = torch.tensor(EOS, device=device)
    return [
        (
            LogitsProcessorList([MinNewTokensLengthLogitsProcessor(20, 128, eos_token_id=eos)]),
            TokenHistory(torch.arange(20, device=device).reshape(1, 20)),
            None,
        )
        for _ in range(count)
    ]


def per_row(logits: torch.Tensor, rows: list) -> torch.Tensor:
    return torch.cat([_choice(logits[i : i + 1], *row) for i, row in enumerate(rows)])


def timed(way, logits: torch.Tensor, rows: list, steps: int, device: torch.device) -> dict[str, float]:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(10):
        way(logits, rows)
    sync()
    seconds = []
    for _ in range(steps):
        started = time.perf_counter()
        way(logits, rows)
        sync()
        seconds.append(time.perf_counter() - started)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as traced:
        way(logits, rows)
        sync()
    operators = sum(1 for event in traced.events() if event.name.startswith("aten::") and event.cpu_parent is None)
    return {"step_us_median": round(median(seconds) * 1e6, 1), "operators": operators}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    results: dict[str, object] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    print(f"{'rows':>4} | {'way':<28} | {'step (µs, median)':>17} | operators")
    for count in args.rows:
        logits = torch.randn(count, VOCABULARY, device=device)
        rows = requests(count, device)
        assert torch.equal(per_row(logits, rows), chosen_tokens(logits, rows))
        for name, way in (("each row's processors", per_row), ("chosen_tokens", chosen_tokens)):
            measured = timed(way, logits, rows, args.steps, device)
            results[f"{count} rows, {name}"] = measured
            print(f"{count:>4} | {name:<28} | {measured['step_us_median']:>17} | {measured['operators']}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
