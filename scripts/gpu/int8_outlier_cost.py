#!/usr/bin/env python3
"""What the outliers' term costs the int8 decode product at several rows (GPU), at idefics2-8b's text shapes.

For each shape and row count, with the tiling the worker chooses (`int8_gemv.tiling_for`), on inputs quantised by
the worker's kernel (`quantize_rows`, ~0.3% outliers a row), times: the outliers as a dense bf16 MMA beside the int8
one (every weight converted every step); as int8 pieces in the int8 MMA (what the decode step passes from three
rows); and `row_invariant=True` (deterministic decoding: the pieces in every kernel, the CUDA-core kernel summing the
listed columns exactly). With the pieces, also the best of a few tilings that split K (`Tiling.splits`: wider
programs that still fill the GPU on narrow layers). Prints per-token sums over the 32 layers; --out writes JSON.
(Before the row-invariant product took the pieces, it listed the columns with one float32 FMA each, and a fourth form
timed no outliers at all: BENCHMARKS.md's 2026-12-02 tables.)

Usage: python scripts/gpu/int8_outlier_cost.py [--rows 2 4 8] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_linear_kernels import timed
from idefics2_worker.kernels import int8_gemv, int8_quantize
from tune_decode_kernels import INT8_SHAPES, LAYERS, steps


# The pieces with K split: wider programs (64 or 128 outputs) over 2, 4 or 8 splits.
SPLIT_K = [
    int8_gemv.Tiling(outputs, 128, mma=True, pieces=True, splits=splits)
    for outputs in (64, 128)
    for splits in (2, 4, 8)
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--out")
    args = parser.parse_args()
    results = []
    for rows in args.rows:
        totals = {"dense": 0.0, "pieces": 0.0, "row_invariant": 0.0, "pieces_split_k": 0.0}
        for name, k, n, per_layer in INT8_SHAPES:
            torch.manual_seed(0)
            x = torch.randn(rows, k, device="cuda")
            x += (torch.rand(rows, k, device="cuda") < 0.003) * torch.randn(rows, k, device="cuda") * 30.0
            q = int8_quantize.quantize_rows(x.to(torch.bfloat16), 6.0, row_invariant=True, lists=True)
            weight = torch.randint(-127, 128, (n, k), dtype=torch.int8, device="cuda")
            weight_absmax = torch.rand(n, device="cuda") * 0.1
            tiling = int8_gemv.tiling_for(n, k, rows)
            common = (weight, q.stats, weight_absmax, torch.bfloat16, tiling)
            listed = (q.quantized, q.outliers, q.columns, q.counts)
            calls = {
                "dense": lambda: int8_gemv.eight_bit_gemv(*listed, *common[:4], replace(tiling, pieces=False)),
                "pieces": lambda: int8_gemv.eight_bit_gemv(
                    *listed,
                    *common[:4],
                    int8_gemv.tiling_for(n, k, rows, pieces=True),
                    pieces=(q.pieces, q.piece_scales),
                ),
                "row_invariant": lambda: int8_gemv.eight_bit_gemv(
                    *listed, *common[:4], row_invariant=True, pieces=(q.pieces, q.piece_scales)
                ),
            }
            row = {"shape": name, "rows": rows, "tiling": tiling.__dict__}
            for form, call in calls.items():
                row[f"{form}_us"] = timed(call, graph=True)
                totals[form] += row[f"{form}_us"] * per_layer * LAYERS
            split_k = {}
            for split in SPLIT_K:
                split_call = (
                    lambda split=split: int8_gemv.eight_bit_gemv(  # noqa: E731
                        *listed, *common[:4], split, pieces=(q.pieces, q.piece_scales)
                    )
                )
                split_k[split] = (timed(split_call, graph=True), steps(split_call(), calls["pieces"]()))
            best = min(split_k, key=lambda split: split_k[split][0])
            row["pieces_split_k_us"], row["pieces_split_k_vs_pieces_steps"] = split_k[best]
            row["pieces_split_k_tiling"] = best.__dict__
            totals["pieces_split_k"] += row["pieces_split_k_us"] * per_layer * LAYERS
            # The pieces' result against the dense MMA's, in bf16 steps at the outputs' RMS (both sum the same terms).
            row["pieces_vs_dense_steps"] = steps(calls["pieces"](), calls["dense"]())
            results.append(row)
            timings = ", ".join(f"{form} {row[f'{form}_us']:6.1f}" for form in totals)
            print(
                f"{name:8} rows {rows}: {timings} us; pieces vs dense {row['pieces_vs_dense_steps']:.2f} steps",
                flush=True,
            )
        print(f"per token, rows {rows}: " + ", ".join(f"{f} {t / 1000:.2f} ms" for f, t in totals.items()), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"card": torch.cuda.get_device_name(), "rows": results}, indent=1))


if __name__ == "__main__":
    main()
