#!/usr/bin/env python3
"""What the outliers' term costs the int8 decode product at several rows (GPU), at idefics2-8b's text shapes.

For each shape and row count, with the tiling the worker chooses (`int8_gemv.tiling_for`), times: the default
product (at 5+ rows the MMA kernel adds the outliers as a dense bf16 MMA: every weight converted every step);
`row_invariant=True` (the outliers' listed columns only, one FMA each); and the same with no outliers at all (the
listed loop runs zero times: the int8 product alone). Prints per-token sums over the 32 layers; --out writes JSON.

Usage: python scripts/gpu/int8_outlier_cost.py [--rows 2 4 8] [--out FILE.json]
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
from idefics2_worker.kernels import int8_gemv
from tune_decode_kernels import INT8_SHAPES, LAYERS, int8_operands


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--out")
    args = parser.parse_args()
    results = []
    for rows in args.rows:
        totals = {"dense": 0.0, "listed": 0.0, "none": 0.0}
        for name, k, n, per_layer in INT8_SHAPES:
            torch.manual_seed(0)
            quantized, outliers, columns, counts, weight, row_absmax, weight_absmax = int8_operands(k, n, rows)
            tiling = int8_gemv.tiling_for(n, k, rows)
            common = (weight, row_absmax, weight_absmax, torch.bfloat16, tiling)
            no_outliers, no_counts = torch.zeros_like(outliers), torch.zeros_like(counts)
            calls = {
                "dense": lambda: int8_gemv.eight_bit_gemv(quantized, outliers, columns, counts, *common),
                "listed": lambda: int8_gemv.eight_bit_gemv(
                    quantized, outliers, columns, counts, *common, row_invariant=True
                ),
                "none": lambda: int8_gemv.eight_bit_gemv(
                    quantized, no_outliers, columns, no_counts, *common, row_invariant=True
                ),
            }
            row = {"shape": name, "rows": rows, "tiling": tiling.__dict__}
            for form, call in calls.items():
                row[f"{form}_us"] = timed(call, graph=True)
                totals[form] += row[f"{form}_us"] * per_layer * LAYERS
            results.append(row)
            print(
                f"{name:8} rows {rows}: dense {row['dense_us']:6.1f} us, listed {row['listed_us']:6.1f}, "
                f"none {row['none_us']:6.1f}  {tiling}",
                flush=True,
            )
        print(
            f"per token, rows {rows}: dense {totals['dense'] / 1000:.2f} ms, listed {totals['listed'] / 1000:.2f}, "
            f"none {totals['none'] / 1000:.2f}",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"card": torch.cuda.get_device_name(), "rows": results}, indent=1))


if __name__ == "__main__":
    main()
