#!/usr/bin/env python3
"""Times the batch-invariant matmul's tilings at idefics2-8b's decode shapes (GPU): every tiling of a grid, at 1 and
8 rows, each from a CUDA graph of 20 calls, against torch's linear (cuBLAS) and the tiling the worker chooses
(`batch_invariant_matmul.tiling_for`). The lm_head (32,003 by 4,096) runs this kernel in every decode step; the
other shapes run it in deterministic decoding at bf16. Checks each result against float64 (largest difference in
bf16 rounding steps, tune_decode_kernels.steps). Prints the best tilings per shape and rows, and writes them as
JSON with --out.

Usage: python scripts/gpu/tune_batch_invariant_matmul.py [--shapes lm_head o] [--rows 1 8] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_linear_kernels import timed
from tune_decode_kernels import steps

from idefics2_worker.kernels import batch_invariant_matmul
from idefics2_worker.kernels.batch_invariant_matmul import Tiling

# (in, out): Mistral-7B's projections as the bf16 fast decoder runs them (q/k/v and gate/up fused), and the lm_head.
SHAPES = {
    "lm_head": (4096, 32003),
    "q/k/v": (4096, 6144),
    "o": (4096, 4096),
    "gate/up": (4096, 28672),
    "down": (14336, 4096),
}
GRID = [
    Tiling(rows=16, outputs=outputs, step=step, splits=splits, warps=warps, stages=stages)
    for outputs, step, warps, stages, splits in itertools.product((32, 64, 128), (64, 128, 256), (4, 8), (3, 5), (1, 2))
    if outputs * step <= 16384
]


def time_tilings(weight: torch.Tensor, rows: int, chosen: Tiling) -> tuple[float, list[dict]]:
    """cuBLAS's time and every tiling's at `rows` rows (us a call), fastest first."""
    k = weight.shape[1]
    x = torch.randn(rows, k, device="cuda").to(torch.bfloat16)
    exact = x.double() @ weight.double().t()
    results = []
    for tiling in [chosen, *GRID]:
        if tiling.splits > 1 and k // tiling.splits < 4 * tiling.step:
            continue

        def call(tiling: Tiling = tiling) -> torch.Tensor:
            return batch_invariant_matmul.linear(x, weight, tiling=tiling)

        try:
            out = call()
            us = timed(call, graph=True)
        except Exception as error:  # a tiling past the card's shared memory: Triton's OutOfResources
            print(f"{tiling}: {type(error).__name__}", file=sys.stderr)
            continue
        results.append({"tiling": tiling.__dict__, "us": round(us, 2), "steps_off": steps(out, exact)})
    cublas = timed(lambda: torch.nn.functional.linear(x, weight), graph=True)
    results.sort(key=lambda r: r["us"])
    return cublas, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["lm_head"])
    parser.add_argument("--rows", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.manual_seed(0)
    report: dict[str, dict] = {"card": torch.cuda.get_device_name(), "shapes": {}}
    for name in args.shapes:
        k, n = SHAPES[name]
        weight = (torch.randn(n, k, device="cuda") * k**-0.5).to(torch.bfloat16)
        gigabytes = weight.numel() * weight.element_size() / 1e9
        chosen = batch_invariant_matmul.tiling_for(n, k)
        shape_report: dict[str, dict] = {}
        for rows in args.rows:
            cublas, results = time_tilings(weight, rows, chosen)
            chosen_us = next(r["us"] for r in results if r["tiling"] == chosen.__dict__)
            print(f"\n{name} {k}->{n}, {rows} rows: cuBLAS {cublas:.2f} us, chosen {chosen} {chosen_us:.2f} us")
            for r in results[: args.top]:
                terabytes_per_s = gigabytes / r["us"] * 1e3
                print(f"  {r['us']:8.2f} us  {terabytes_per_s:5.2f} TB/s  {r['steps_off']:.2f} steps  {r['tiling']}")
            best = results[: args.top]
            shape_report[str(rows)] = {"cublas_us": round(cublas, 2), "chosen_us": chosen_us, "best": best}
        report["shapes"][name] = shape_report
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
