#!/usr/bin/env python3
"""Chooses the tilings of the worker's 4-bit and int8 decode kernels (GPU): times every tiling in a grid at
idefics2-8b's text-model shapes, at 1, 2 and 8 rows, against bitsandbytes' own kernels, and checks each result
against bitsandbytes (largest difference in bf16 rounding steps). The grid holds the int8 tensor-core (MMA)
tilings and the CUDA-core tilings chosen by an earlier sweep (docs/BENCHMARKS.md, change 4).

Kernels are compiled first by a pool of processes (Triton caches them on disk), then timed one at a time from
CUDA graphs of 20 calls. Prints the best tilings per shape and rows, and the per-token sum over the 32 layers
for the best tilings and for the ones the worker chooses (`tiling_for`).

Usage: python scripts/gpu/tune_decode_kernels.py [--kinds four_bit int8] [--rows 1 2 8] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_linear_kernels import timed
from idefics2_worker.kernels import four_bit_gemv, int8_gemv
from triton import next_power_of_2
from idefics2_worker.kernels.int8_quantize import outlier_columns

LAYERS = 32
# (name, in, out, count per layer): Mistral-7B as in idefics2-8b, q/k/v and gate/up fused as the fast decoder runs
# them (decode/fused_projections.py; 8-bit layers are not fused, but the shapes' costs add up the same way).
SHAPES = [
    ("q/k/v", 4096, 6144, 1),
    ("o", 4096, 4096, 1),
    ("gate/up", 4096, 28672, 1),
    ("down", 14336, 4096, 1),
]
# 8-bit q/k/v and gate/up run fused too (change 25): the same shapes.
INT8_SHAPES = SHAPES
FOUR_BIT = [
    four_bit_gemv.Tiling(outputs, blocks, warps, defer)
    for outputs, blocks, warps, defer in itertools.product([8, 16, 32], [4, 8, 16], [4, 8], [False, True])
]
# Several rows with each row's sums kept per lane: rows x outputs x blocks x 32 of them in a program, within ~128
# registers a thread.
FOUR_BIT_ROWS = [
    four_bit_gemv.Tiling(outputs, blocks, warps, defer=True)
    for outputs, blocks, warps in itertools.product([2, 4, 8, 16], [1, 2, 4, 8], [2, 4, 8])
]
INT8 = [
    int8_gemv.Tiling(),
    int8_gemv.Tiling(columns=512),
    *(int8_gemv.Tiling(o, c, 4, mma=True) for o, c in itertools.product([16, 32, 64], [128, 256])),
]
# Several rows: the MMA kernel's wider grid (outputs, columns, warps, pipeline stages), and the CUDA-core kernel's
# several-row form (each lane's sums kept per row: rows x outputs x columns / 4 of them in a program).
INT8_MMA = [
    int8_gemv.Tiling(outputs, columns, warps, mma=True, stages=stages)
    for outputs, columns, warps, stages in itertools.product([16, 32, 64, 128], [128, 256, 512], [4, 8], [3, 4, 5])
]
INT8_CUDA_CORE_ROWS = [
    int8_gemv.Tiling(outputs, columns, warps)
    for outputs, columns, warps in itertools.product([2, 4, 8, 16], [128, 256, 512], [2, 4, 8])
]
# One row runs the CUDA-core kernel (one dp4a per four weights, the sums kept per lane): its grid.
INT8_ONE_ROW = [
    int8_gemv.Tiling(outputs, columns, warps)
    for outputs, columns, warps in itertools.product([4, 8, 16, 32], [512, 1024, 2048], [2, 4, 8])
]
ROWS = [1, 2, 8]
KINDS = ["four_bit", "int8"]


def four_bit_operands(k: int, n: int) -> tuple[torch.nn.Module, tuple]:
    import bitsandbytes as bnb

    layer = bnb.nn.Linear4bit(k, n, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    weight = (torch.randn(n, k) * 0.02).to(torch.bfloat16)
    layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4", compress_statistics=False)
    layer = layer.cuda()
    state = layer.weight.quant_state
    return layer, (
        layer.weight.data.view(-1),
        state.absmax,
        state.code,
        (n, k),
        state.blocksize,
    )


def int8_operands(k: int, n: int, rows: int) -> tuple:
    weight = torch.randint(-127, 128, (n, k), dtype=torch.int8, device="cuda")
    weight_absmax = torch.rand(n, device="cuda") * 0.1
    quantized = torch.randint(-127, 128, (rows, k), dtype=torch.int8, device="cuda")
    row_absmax = torch.rand(rows, device="cuda") * 3
    # Outliers scattered over ~0.3% of each row's columns, as the 8B-shaped random model's activations hold them
    # (trained models' cluster in a few columns).
    scattered = torch.rand(rows, k, device="cuda") < 0.003
    outliers = (torch.randn(rows, k, device="cuda") * 9.0 * scattered).to(torch.bfloat16)
    return (
        quantized,
        outliers,
        *outlier_columns(outliers),
        weight,
        row_absmax,
        weight_absmax,
    )


def compile_shape(job: tuple[str, int, int, int]) -> int:
    """Runs every tiling once for one (kind, k, n, rows) on small data, so the timing process finds them cached."""
    kind, k, n, rows = job
    torch.manual_seed(0)
    compiled = 0
    for tiling in variants(kind, rows):
        try:
            call(kind, k, n, rows, tiling)()
            compiled += 1
        except Exception as error:  # a tiling that does not compile is left out of the timing
            print(
                f"{kind} {k}x{n} rows {rows} {tiling}: {type(error).__name__}",
                flush=True,
            )
    torch.cuda.synchronize()
    return compiled


OPERANDS: dict[tuple, tuple] = {}


def variants(kind: str, rows: int) -> list[object]:
    if kind != "four_bit":
        return INT8 + [t for t in INT8_ONE_ROW if t not in INT8] if rows == 1 else INT8_MMA + INT8_CUDA_CORE_ROWS
    if rows == 1:
        return FOUR_BIT
    within = [t for t in FOUR_BIT_ROWS if next_power_of_2(rows) * t.outputs * t.blocks <= 128 * t.warps]
    return [t for t in FOUR_BIT if not t.defer] + within


def call(kind: str, k: int, n: int, rows: int, tiling: object) -> object:
    """A no-argument call of one kernel with one tiling on operands kept per shape."""
    key = (kind, k, n, rows)
    if key not in OPERANDS:
        torch.manual_seed(0)
        if kind == "four_bit":
            layer, operands = four_bit_operands(k, n)
            OPERANDS[key] = (
                layer,
                operands,
                torch.randn(rows, k, dtype=torch.bfloat16, device="cuda"),
            )
        else:
            OPERANDS[key] = (None, int8_operands(k, n, rows), None)
    _, operands, x = OPERANDS[key]
    if kind == "four_bit":
        return lambda: four_bit_gemv.four_bit_gemv(x, *operands, tiling=tiling)
    return lambda: int8_gemv.eight_bit_gemv(*operands, torch.bfloat16, tiling=tiling)


def steps(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """Largest difference in bf16 rounding steps, taken at least at the outputs' RMS: float32 sums in another
    order differ by a step or so of the terms summed, which is many steps of an output that cancels to ~0."""
    a, b = ours.double(), theirs.double()
    floor = b.pow(2).mean().sqrt().item()
    return float(((a - b).abs() / (2.0**-7 * torch.maximum(a.abs(), b.abs()).clamp_min(floor))).max().item())


def worker_choice(kind: str, k: int, n: int, rows: int) -> dict:
    """The tiling the worker's decode step uses for this shape."""
    if kind == "four_bit":
        return four_bit_gemv.tiling_for(n, rows).__dict__
    return int8_gemv.tiling_for(n, k, rows).__dict__


def form_of(kind: str, tiling: dict) -> str:
    """The kernel form a tiling picks: int8's CUDA-core or MMA kernel, the 4-bit kernel's two ways to sum."""
    if kind == "int8":
        return "MMA" if tiling["mma"] else "CUDA-core"
    return "sums per lane" if tiling["defer"] else "sums reduced each step"


def us(row: dict) -> float:
    return row["us"]


def shapes_of(kind: str) -> list[tuple[str, int, int, int]]:
    return SHAPES if kind == "four_bit" else INT8_SHAPES


def time_shape(name: str, k: int, n: int, rows: int, kinds: list[str]) -> list[dict]:
    results = []
    base = {"shape": name, "rows": rows}
    theirs, bnb_us = None, None
    if "four_bit" in kinds:
        call("four_bit", k, n, rows, four_bit_gemv.tiling_for(n, rows))
        layer, _, x = OPERANDS[("four_bit", k, n, rows)]
        with torch.inference_mode():
            theirs = torch.cat([layer(x[i : i + 1]) for i in range(rows)])  # bitsandbytes, one row at a time
            bnb_us = timed(lambda: layer(x), graph=True)
        results.append({"kind": "bitsandbytes nf4 float32", **base, "us": bnb_us})
    for kind in kinds:
        for tiling in variants(kind, rows):
            try:
                run = call(kind, k, n, rows, tiling)
                row = {
                    "kind": kind,
                    **base,
                    "tiling": tiling.__dict__,
                    "us": timed(run, graph=True),
                }
            except Exception:  # reported when compiled
                continue
            if kind == "four_bit":
                row["steps_vs_bitsandbytes"] = steps(run(), theirs)
            results.append(row)
        ranked = sorted((r for r in results if r["kind"] == kind), key=us)
        default = worker_choice(kind, k, n, rows)
        default_us = next((r["us"] for r in ranked if r["tiling"] == default), float("nan"))
        note = f"bitsandbytes {bnb_us:7.1f} us; " if kind == "four_bit" else ""
        worst = max((r.get("steps_vs_bitsandbytes", 0.0) for r in ranked), default=0.0)
        print(
            f"{kind:8} {name:8} rows {rows}: {note}default {default_us:7.1f} us; max steps {worst:.2f}",
            flush=True,
        )
        for r in ranked[:4]:
            print(f"      {r['us']:7.1f} us {r['tiling']}", flush=True)
        for name_of_form in ("CUDA-core", "MMA", "sums per lane", "sums reduced each step"):
            form = [r for r in ranked if form_of(kind, r["tiling"]) == name_of_form]
            if form:
                print(f"      best {name_of_form}: {form[0]['us']:7.1f} us {form[0]['tiling']}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--kinds", nargs="+", choices=["four_bit", "int8"], default=["four_bit", "int8"])
    parser.add_argument("--rows", nargs="+", type=int, default=ROWS)
    args = parser.parse_args()
    KINDS[:] = args.kinds
    ROWS[:] = args.rows
    started = time.time()
    jobs = [(kind, k, n, rows) for kind in KINDS for _, k, n, _ in shapes_of(kind) for rows in ROWS]
    workers = min(len(jobs), max(1, (os.cpu_count() or 2) - 1))
    with ProcessPoolExecutor(workers, mp_context=torch.multiprocessing.get_context("spawn")) as pool:
        compiled = sum(pool.map(compile_shape, jobs))
    print(f"compiled {compiled} kernels in {time.time() - started:.0f} s", flush=True)

    results = []
    kinds_of: dict[tuple[str, int, int], list[str]] = {}
    for kind in KINDS:
        for name, k, n, _ in shapes_of(kind):
            kinds_of.setdefault((name, k, n), []).append(kind)
    for (name, k, n), kinds in kinds_of.items():
        for rows in ROWS:
            results += time_shape(name, k, n, rows, kinds)
        OPERANDS.clear()
        torch.cuda.empty_cache()
    for kind in KINDS:
        for rows in ROWS:
            best = chosen = 0.0
            best_of_form = {False: 0.0, True: 0.0}
            for name, k, n, per_layer in shapes_of(kind):
                timings = [r for r in results if (r["kind"], r["shape"], r["rows"]) == (kind, name, rows)]
                worker = worker_choice(kind, k, n, rows)
                best += min(timings, key=us)["us"] * per_layer * LAYERS
                for mma in best_of_form:
                    form = [r for r in timings if r["tiling"].get("mma") == mma] or [{"us": float("nan")}]
                    best_of_form[mma] += min(form, key=us)["us"] * per_layer * LAYERS
                chosen += (
                    next(
                        (r["us"] for r in timings if r["tiling"] == worker),
                        float("nan"),
                    )
                    * per_layer
                    * LAYERS
                )
            line = f"per token, {kind}, rows {rows}: best tilings {best / 1000:.2f} ms, chosen {chosen / 1000:.2f} ms"
            if kind == "int8":
                line += f" (best CUDA-core {best_of_form[False] / 1000:.2f}, best MMA {best_of_form[True] / 1000:.2f})"
            print(line, flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"card": torch.cuda.get_device_name(), "rows": results}, indent=1))


if __name__ == "__main__":
    main()
