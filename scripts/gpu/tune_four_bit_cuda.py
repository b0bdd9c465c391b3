#!/usr/bin/env python3
"""Chooses the 4-bit CUDA kernels' tilings (GPU): times a grid of them at idefics2-8b's text shapes and 1, 2, 4 and 8
rows, beside the Triton kernel (`four_bit_gemv`, its `tiling_for`), and checks each result. `--kernel gemv`: the
CUDA-core kernel's grid; `--kernel mma`: the tensor-core kernel's, beside the CUDA-core kernel's `tiling_for`;
`--kernel packed`: the packed-layout tensor-core kernel's, beside both kernels as the worker runs them.

- Checks, per shape and rows: the largest difference from the exact product (float64 over bitsandbytes'
  dequantised weight), in bf16 rounding steps at the outputs' RMS, for every kernel; and that each row's bits do
  not depend on the rows (CUDA cores: nor on the tiling at one `splits`): the first row of every launch against
  one row alone.
- Times: microseconds a call from CUDA graphs of 20 calls; the weights' read rate (packed bytes and absmax).
- Prints per shape and rows the Triton kernel, the best CUDA tiling and `tiling_for`'s, and the per-token sums over
  the 32 layers; per shape and splits (which alone sets the order of the sums) the best time at each row count;
  the compile times (the worker's set; the grid).

Usage: python scripts/gpu/tune_four_bit_cuda.py [--kernel gemv|mma|packed] [--rows 1 2 4 8] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bitsandbytes.functional import dequantize_4bit

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_linear_kernels import timed
from idefics2_worker.kernels import four_bit_cuda, four_bit_gemv, four_bit_packing
from tune_decode_kernels import LAYERS, SHAPES, four_bit_operands

GRID = [
    four_bit_cuda.Tiling(outputs, splits, splits * groups)
    for outputs, splits, groups in itertools.product([1, 2, 4, 8], [1, 2, 4, 8], [1, 2, 4])
    if splits * groups <= four_bit_cuda.MAX_WARPS
]
MMA_GRID = [
    four_bit_cuda.MmaTiling(tiles, splits, unroll)
    for tiles, splits, unroll in itertools.product([1, 2, 4, 8], [1, 2, 4, 8, 16], [1, 2, 4])
    if tiles * splits <= four_bit_cuda.MMA_MAX_WARPS
]
PACKED_GRID = [
    four_bit_cuda.PackedTiling(groups, splits, unroll, tiles)
    for groups, splits, unroll, tiles in itertools.product([1, 2, 4], [2, 4, 8, 16], [1, 2, 4], [1, 2, 4])
    if groups * splits <= four_bit_cuda.MMA_MAX_WARPS and four_bit_cuda.PACK_TILES % (groups * tiles) == 0
]
BF16_STEP = 2.0**-8


def steps_at_rms(ours: torch.Tensor, exact: torch.Tensor) -> float:
    rms = exact.pow(2).mean().sqrt().clamp_min(1e-30)
    return float(((ours.double() - exact).abs().max() / (BF16_STEP * rms)).item())


def timed_tiling(
    fields: list[int],
    run: Callable[[], torch.Tensor],
    out: torch.Tensor,
    exact: torch.Tensor,
    *,
    weight_bytes: int,
    same: bool,
) -> dict:
    """One tiling's entry: its time a call (CUDA graphs), read rate, error and invariance."""
    us = timed(run, graph=True)
    return {
        "tiling": fields,
        "us": round(us, 2),
        "gbps": round(weight_bytes / us / 1e3, 1),
        "steps": round(steps_at_rms(out, exact), 3),
        "same_bits_as_one_row": same,
    }


def fits(tiling: four_bit_cuda.Tiling, rows: int) -> bool:
    # Registers a thread: the loaded chunks (4 each), the inputs (8 a row) and two sums an output and row.
    return tiling.outputs * 4 + rows * 8 + 2 * tiling.outputs * rows <= 160


def measure_shape(name: str, k: int, n: int, *, rows_list: list[int], instances: set, grid_set: dict) -> list[dict]:
    """One shape at each row count: the Triton kernel, every CUDA tiling of the grid, and `tiling_for`'s."""
    device = torch.device("cuda")
    results = []
    layer, operands = four_bit_operands(k, n)
    packed, absmax = operands[0], operands[1]
    dense = dequantize_4bit(layer.weight.data, layer.weight.quant_state).double()
    weight_bytes = packed.numel() + absmax.numel() * 4
    for rows in rows_list:
        x = torch.randn(rows, k, device=device).to(torch.bfloat16)
        exact = x.double() @ dense.T
        # One row alone at each splits (the order of the sums depends on it alone).
        alone = {
            splits: four_bit_cuda.four_bit_gemv_cuda(
                x[:1], *operands, tiling=four_bit_cuda.Tiling(1, splits, splits), compiled=grid_set
            )
            for splits in {t.splits for t in GRID}
        }
        triton_out = four_bit_gemv.four_bit_gemv(x, *operands)
        triton_us = timed(lambda x=x, o=operands: four_bit_gemv.four_bit_gemv(x, *o), graph=True)
        entry = {
            "shape": name,
            "k": k,
            "n": n,
            "rows": rows,
            "triton_us": round(triton_us, 2),
            "triton_steps": round(steps_at_rms(triton_out, exact), 3),
            "tilings": [],
        }
        invariant = True
        for tiling in sorted((t for r, t in instances if r == rows), key=str):

            def run(x: torch.Tensor = x, tiling: four_bit_cuda.Tiling = tiling, o: tuple = operands) -> torch.Tensor:
                return four_bit_cuda.four_bit_gemv_cuda(x, *o, tiling=tiling, compiled=grid_set)

            out = run()
            same = torch.equal(out[:1], alone[tiling.splits])
            invariant = invariant and same
            entry["tilings"].append(
                timed_tiling(
                    [tiling.outputs, tiling.splits, tiling.warps], run, out, exact, weight_bytes=weight_bytes, same=same
                )
            )
        chosen = four_bit_cuda.tiling_for(n, k, rows)
        entry["chosen"] = [chosen.outputs, chosen.splits, chosen.warps]
        entry["chosen_us"] = round(
            timed(lambda x=x, o=operands: four_bit_cuda.four_bit_gemv_cuda(x, *o), graph=True), 2
        )
        best = min(entry["tilings"], key=lambda t: t["us"])
        entry["best"] = best
        entry["invariant"] = invariant
        results.append(entry)
        print(
            f"{name:8} rows {rows}: triton {triton_us:8.2f} us | cuda best {best['us']:8.2f} us "
            f"{best['tiling']} ({best['gbps']} GB/s, {best['steps']} steps) | chosen {entry['chosen_us']:8.2f} | "
            f"invariant {invariant}",
            flush=True,
        )
    return results


def measure_mma_shape(name: str, k: int, n: int, *, rows_list: list[int], mma_set: dict) -> list[dict]:
    """One shape at each row count: the Triton kernel, the CUDA-core kernel's `tiling_for`, every tensor-core tiling of
    the grid, and `mma_tiling_for`'s."""
    device = torch.device("cuda")
    results = []
    layer, operands = four_bit_operands(k, n)
    dense = dequantize_4bit(layer.weight.data, layer.weight.quant_state).double()
    weight_bytes = operands[0].numel() + operands[1].numel() * 4
    for rows in rows_list:
        x = torch.randn(rows, k, device=device).to(torch.bfloat16)
        exact = x.double() @ dense.T
        triton_out = four_bit_gemv.four_bit_gemv(x, *operands)
        gemv_out = four_bit_cuda.four_bit_gemv_cuda(x, *operands)
        entry = {
            "shape": name,
            "k": k,
            "n": n,
            "rows": rows,
            "triton_us": round(timed(lambda x=x, o=operands: four_bit_gemv.four_bit_gemv(x, *o), graph=True), 2),
            "triton_steps": round(steps_at_rms(triton_out, exact), 3),
            "gemv_us": round(timed(lambda x=x, o=operands: four_bit_cuda.four_bit_gemv_cuda(x, *o), graph=True), 2),
            "gemv_steps": round(steps_at_rms(gemv_out, exact), 3),
            "tilings": [],
        }
        invariant = True
        for tiling in MMA_GRID:

            def run(x: torch.Tensor = x, tiling: four_bit_cuda.MmaTiling = tiling, o: tuple = operands) -> torch.Tensor:
                return four_bit_cuda.four_bit_mma_cuda(x, *o, tiling=tiling, compiled=mma_set)

            out = run()
            alone = four_bit_cuda.four_bit_mma_cuda(x[:1], *operands, tiling=tiling, compiled=mma_set)
            same = torch.equal(out[:1], alone)
            invariant = invariant and same
            entry["tilings"].append(
                timed_tiling(
                    [tiling.tiles, tiling.splits, tiling.unroll], run, out, exact, weight_bytes=weight_bytes, same=same
                )
            )
        chosen = four_bit_cuda.mma_tiling_for(n, k)
        entry["chosen"] = [chosen.tiles, chosen.splits, chosen.unroll]
        entry["chosen_us"] = round(
            timed(lambda x=x, o=operands: four_bit_cuda.four_bit_mma_cuda(x, *o, compiled=mma_set), graph=True), 2
        )
        best = min(entry["tilings"], key=lambda t: t["us"])
        entry["best"] = best
        entry["invariant"] = invariant
        results.append(entry)
        print(
            f"{name:8} rows {rows}: triton {entry['triton_us']:8.2f} us | cuda cores {entry['gemv_us']:8.2f} us "
            f"({entry['gemv_steps']} steps) | tensor cores best {best['us']:8.2f} us {best['tiling']} "
            f"({best['gbps']} GB/s, {best['steps']} steps) | chosen {entry['chosen_us']:8.2f} | invariant {invariant}",
            flush=True,
        )
    return results


def summarize(results: list[dict], splits_set: set[int], rows_list: list[int], keys: tuple[str, ...]) -> dict:
    """Prints per shape and splits the best time at each row count, and per row count the sums over the 32 layers of
    `keys` (ms a token); returns those sums."""
    for name, *_ in SHAPES:
        for splits in sorted(splits_set):
            best = {
                e["rows"]: min(t["us"] for t in e["tilings"] if t["tiling"][1] == splits)
                for e in results
                if e["shape"] == name
            }
            print(f"{name:8} splits {splits}: best us by rows {best}", flush=True)
    totals = {}
    for rows in rows_list:
        at = [e for e in results if e["rows"] == rows]
        totals[rows] = {
            key: round(sum(e[key] if key != "best_us" else e["best"]["us"] for e in at) * LAYERS / 1000, 3)
            for key in keys
        }
        print(f"per token, {rows} rows (ms): {totals[rows]}", flush=True)
    return totals


def compiled_grid(instances: set, label: str) -> tuple[dict, float]:
    """The grid's kernels for bf16 inputs, and the seconds their compile took."""
    start = time.perf_counter()
    kernel_set = four_bit_cuda.kernels(torch.bfloat16, torch.device("cuda"), instances)
    compile_s = time.perf_counter() - start
    if kernel_set is None:
        raise SystemExit(f"the {label} kernel did not compile: {four_bit_cuda._failed}")
    print(f"compile: {label} grid {compile_s:.2f} s", flush=True)
    return kernel_set, compile_s


def main_mma(rows_list: list[int]) -> dict:
    instances = {(1, t) for t in MMA_GRID}
    mma_set, compile_s = compiled_grid(instances, "tensor-core")
    results = []
    for name, k, n, _count in SHAPES:
        results += measure_mma_shape(name, k, n, rows_list=rows_list, mma_set=mma_set)
    totals = summarize(
        results, {t.splits for t in MMA_GRID}, rows_list, ("triton_us", "gemv_us", "best_us", "chosen_us")
    )
    return {"compile_grid_s": compile_s, "grid_size": len(instances), "results": results, "per_token_ms": totals}


def measure_packed_shape(name: str, k: int, n: int, *, rows_list: list[int], kernel_set: dict) -> list[dict]:
    """One shape at each row count: the CUDA-core kernel's `tiling_for`, the tensor-core kernel's `mma_tiling_for`, and
    every tiling of the packed kernel, each checked to give the bits of the tensor-core kernel at its splits and unroll
    (the same order of sums)."""
    device = torch.device("cuda")
    results = []
    layer, operands = four_bit_operands(k, n)
    packed_layer = four_bit_packing.pack(operands[0], operands[1], (n, k), operands[4])
    code, shape, blocksize = operands[2], operands[3], operands[4]
    dense = dequantize_4bit(layer.weight.data, layer.weight.quant_state).double()
    weight_bytes = operands[0].numel() + operands[1].numel() * 4
    for rows in rows_list:
        x = torch.randn(rows, k, device=device).to(torch.bfloat16)
        exact = x.double() @ dense.T
        entry = {
            "shape": name,
            "k": k,
            "n": n,
            "rows": rows,
            "gemv_us": round(timed(lambda x=x, o=operands: four_bit_cuda.four_bit_gemv_cuda(x, *o), graph=True), 2),
            "mma_us": round(timed(lambda x=x, o=operands: four_bit_cuda.four_bit_mma_cuda(x, *o), graph=True), 2),
            "tilings": [],
        }
        same_bits = True
        for tiling in PACKED_GRID:

            def run(x: torch.Tensor = x, tiling: four_bit_cuda.PackedTiling = tiling) -> torch.Tensor:
                return four_bit_cuda.four_bit_mma_packed_cuda(
                    x, packed_layer, code, shape, blocksize, tiling=tiling, compiled=kernel_set
                )

            out = run()
            unpacked = four_bit_cuda.MmaTiling(1, tiling.splits, tiling.unroll)
            theirs = four_bit_cuda.four_bit_mma_cuda(x, *operands, tiling=unpacked, compiled=kernel_set)
            same = torch.equal(out, theirs)
            same_bits = same_bits and same
            entry["tilings"].append(
                timed_tiling(
                    [tiling.groups, tiling.splits, tiling.unroll, tiling.tiles],
                    run,
                    out,
                    exact,
                    weight_bytes=weight_bytes,
                    same=same,
                )
            )
        best = min(entry["tilings"], key=lambda t: t["us"])
        entry["best"] = best
        entry["same_bits_as_unpacked"] = same_bits
        results.append(entry)
        print(
            f"{name:8} rows {rows}: cuda cores {entry['gemv_us']:8.2f} us | tensor cores {entry['mma_us']:8.2f} us | "
            f"packed best {best['us']:8.2f} us {best['tiling']} ({best['gbps']} GB/s, {best['steps']} steps) | "
            f"bits of the unpacked kernel {same_bits}",
            flush=True,
        )
    return results


def main_packed(rows_list: list[int]) -> dict:
    """`--kernel packed`: the packed-layout tensor-core kernel's grid (`same_bits_as_one_row` in its entries: the
    unpacked kernel's bits at the same splits and unroll)."""
    unpacked = {(1, four_bit_cuda.MmaTiling(1, t.splits, t.unroll)) for t in PACKED_GRID}
    kernel_set, compile_s = compiled_grid({(1, t) for t in PACKED_GRID} | unpacked, "packed")
    results = []
    for name, k, n, _count in SHAPES:
        results += measure_packed_shape(name, k, n, rows_list=rows_list, kernel_set=kernel_set)
    totals = summarize(results, {t.splits for t in PACKED_GRID}, rows_list, ("gemv_us", "mma_us", "best_us"))
    return {"compile_grid_s": compile_s, "grid_size": len(PACKED_GRID), "results": results, "per_token_ms": totals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernel", choices=["gemv", "mma", "packed"], default="mma")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda")
    torch.manual_seed(0)
    if args.kernel in ("mma", "packed"):
        found = main_mma(args.rows) if args.kernel == "mma" else main_packed(args.rows)
        if args.out:
            found = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "kernel": args.kernel, **found}
            args.out.write_text(json.dumps(found, indent=1))
        return

    start = time.perf_counter()
    worker_set = four_bit_cuda.kernels(torch.bfloat16, device)
    compile_worker_s = time.perf_counter() - start
    if worker_set is None:
        raise SystemExit(f"the CUDA kernel did not compile: {four_bit_cuda._failed}")
    instances = {(rows, t) for rows in {1, *args.rows} for t in GRID if fits(t, rows)}
    start = time.perf_counter()
    grid_set = four_bit_cuda.kernels(torch.bfloat16, device, instances)
    compile_grid_s = time.perf_counter() - start
    assert grid_set is not None
    print(f"compile: worker set {compile_worker_s:.2f} s, grid of {len(instances)} {compile_grid_s:.2f} s", flush=True)

    results = []
    for name, k, n, _count in SHAPES:
        results += measure_shape(name, k, n, rows_list=args.rows, instances=instances, grid_set=grid_set)
    totals = summarize(results, {t.splits for t in GRID}, args.rows, ("triton_us", "best_us", "chosen_us"))
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "device": torch.cuda.get_device_name(),
                    "torch": torch.__version__,
                    "compile_worker_s": compile_worker_s,
                    "compile_grid_s": compile_grid_s,
                    "grid_size": len(instances),
                    "results": results,
                    "per_token_ms": totals,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
