#!/usr/bin/env python3
"""Warps for the int8 decode step's quantisation kernels (GPU), at idefics2-8b's widths.

Each quantisation runs one program a row, so at 1-8 rows a launch is 1-8 programs on a 132-SM card and its time is
the latency of one program over a whole row: more warps share the row's columns and its reductions. Times, from CUDA
graphs of 20 calls, `int8_quantize.quantize_rows` (o's input, 4,096 wide, and down's, 14,336) and
`step_kernels.add_rms_norm_quantized` (q/k/v's and gate/up's, 4,096) at each row count and warp count, with what
each row count writes by default (the pieces from three rows, the lists up to four), ~0.3% outliers a row. Checks
that every warp count gives the default's bits. Prints a table and the per-token sum over the 32 layers for the
defaults and for the best; --out writes JSON.

Usage: python scripts/gpu/tune_quantize.py [--rows 1 2 4 8] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_linear_kernels import timed
from idefics2_worker.kernels import int8_quantize, step_kernels

LAYERS = 32
WARPS = [2, 4, 8, 16, 32]
# (name, width, launches per layer): the step's quantisations of idefics2-8b.
KERNELS = [("quantize o input", 4096, 1), ("quantize down input", 14336, 1), ("norm + quantize", 4096, 2)]


def rows_of(rows: int, width: int) -> torch.Tensor:
    x = torch.randn(rows, width, device="cuda")
    x += (torch.rand(rows, width, device="cuda") < 0.003) * torch.randn(rows, width, device="cuda") * 30.0
    return x.to(torch.bfloat16)


def same(a: int8_quantize.QuantizedRows, b: int8_quantize.QuantizedRows) -> bool:
    """The same bits, the columns' lists up to their counts (past them the kernel leaves them unspecified)."""
    for name in ("quantized", "stats", "outliers", "counts", "pieces", "piece_scales"):
        x, y = getattr(a, name), getattr(b, name)
        if (x is None) != (y is None) or (x is not None and not torch.equal(x, y)):
            return False
    if a.columns is None or b.columns is None or a.counts is None:
        return a.columns is None and b.columns is None
    return all(torch.equal(a.columns[r, :count], b.columns[r, :count]) for r, count in enumerate(a.counts.tolist()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--out")
    args = parser.parse_args()
    results = []
    for rows in args.rows:
        totals = {"default": 0.0, "best": 0.0}
        for name, width, per_layer in KERNELS:
            torch.manual_seed(0)
            x = rows_of(rows, width)
            if name == "norm + quantize":
                residual = x[:, None, :]
                delta = rows_of(rows, width)[:, None, :]
                weight = (torch.rand(width, device="cuda") + 0.5).to(torch.bfloat16)

                def call(warps: int | None, residual=residual, delta=delta, weight=weight) -> object:
                    return step_kernels.add_rms_norm_quantized(residual, delta, weight, 1e-5, 6.0, warps=warps)[2]
            else:

                def call(warps: int | None, x=x) -> object:
                    return int8_quantize.quantize_rows(x, 6.0, warps=warps)

            expected = call(None)
            row = {"kernel": name, "width": width, "rows": rows, "default_us": timed(lambda: call(None), graph=True)}
            for warps in WARPS:
                row[f"warps_{warps}_us"] = timed(lambda warps=warps: call(warps), graph=True)
                row[f"warps_{warps}_same_bits"] = same(call(warps), expected)
            best = min(WARPS, key=lambda warps: row[f"warps_{warps}_us"])
            row["best_warps"] = best
            totals["default"] += row["default_us"] * per_layer * LAYERS
            totals["best"] += row[f"warps_{best}_us"] * per_layer * LAYERS
            results.append(row)
            timings = "  ".join(f"{w}: {row[f'warps_{w}_us']:5.1f}" for w in WARPS)
            print(f"{rows} rows  {name:20s} default {row['default_us']:5.1f} µs  {timings}  (best {best})")
        print(f"{rows} rows  per token: default {totals['default'] / 1000:.3f} ms, best {totals['best'] / 1000:.3f} ms")
        results.append({"rows": rows, "per_token_ms": {k: v / 1000 for k, v in totals.items()}})
    print(json.dumps(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
