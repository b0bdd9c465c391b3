#!/usr/bin/env python3
"""What the code lookups cost the 4-bit decode kernel at one row (GPU), at idefics2-8b's text shapes.

`four_bit_gemv`'s one-row form looks up each nibble's value in bitsandbytes' 16-entry code table (two loads a byte).
This probe times a copy of that form as it is, and the same copy with each lookup replaced by register arithmetic
that turns the nibble itself into a float (wrong values: a probe of the cost, not a kernel), beside the worker's
kernel and bitsandbytes' own. If the copy without lookups is much faster, the lookups bound the kernel; if not,
the rest of the loop does. Prints per-token sums over the 32 layers; --out writes JSON.

Usage: python scripts/gpu/four_bit_lookup_cost.py [--out FILE.json]
"""

# Triton's @jit kernels take launch options (num_warps) and tl.constexpr parameters that its types do not describe.
# pyright: reportCallIssue=false, reportArgumentType=false, reportGeneralTypeIssues=false

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_linear_kernels import timed
from idefics2_worker.kernels import four_bit_gemv
from tune_decode_kernels import LAYERS, SHAPES, four_bit_operands


@triton.jit
def _probe_kernel(x, packed, absmax, code, out, N, K: tl.constexpr, QBLOCK: tl.constexpr, BLOCK_N: tl.constexpr,
                  GROUPS: tl.constexpr, LOOKUP: tl.constexpr):  # fmt: skip
    # four_bit_gemv's DEFER form at one row, without bias; LOOKUP=False: each nibble n becomes the float n through
    # its bits (n | 0x4B000000 is 2^23 + n), one integer op and one float op instead of an address and a load.
    HALF: tl.constexpr = QBLOCK // 2
    PER_ROW: tl.constexpr = K // QBLOCK
    outputs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    output_ok = outputs < N
    group = tl.arange(0, GROUPS)
    pair = tl.arange(0, HALF)
    lanes = tl.zeros([BLOCK_N, GROUPS, HALF], dtype=tl.float32)
    for first in range(0, PER_ROW, GROUPS):
        blocks = first + group
        block_ok = blocks < PER_ROW
        scale_ok = output_ok[:, None] & block_ok[None, :]
        scale = tl.load(absmax + outputs[:, None] * PER_ROW + blocks[None, :], mask=scale_ok, other=0.0)
        byte_at = outputs[:, None, None] * (K // 2) + blocks[None, :, None] * HALF + pair[None, None, :]
        byte = tl.load(packed + byte_at, mask=scale_ok[:, :, None], other=0).to(tl.int32)
        if LOOKUP:
            high = tl.load(code + (byte >> 4))
            low = tl.load(code + (byte & 15))
        else:
            high = ((byte >> 4) | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
            low = ((byte & 15) | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
        even_at = blocks[:, None] * QBLOCK + pair[None, :] * 2
        even = tl.load(x + even_at, mask=block_ok[:, None], other=0.0).to(tl.float32)
        odd = tl.load(x + even_at + 1, mask=block_ok[:, None], other=0.0).to(tl.float32)
        lanes += (high * even[None, :, :] + low * odd[None, :, :]) * scale[:, :, None]
    total = tl.sum(tl.sum(lanes, axis=2), axis=1)
    tl.store(out + outputs, total.to(tl.bfloat16), mask=output_ok)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    args = parser.parse_args()
    results = []
    totals = {"bitsandbytes": 0.0, "worker": 0.0, "copy": 0.0, "no_lookup": 0.0}
    for name, k, n, per_layer in SHAPES:
        torch.manual_seed(0)
        layer, (packed, absmax, code, shape, blocksize) = four_bit_operands(k, n)
        x = torch.randn(1, k, dtype=torch.bfloat16, device="cuda")
        out = torch.empty(1, n, dtype=torch.bfloat16, device="cuda")
        tiling = four_bit_gemv.tiling_for(n, 1)

        def probe(lookup: bool) -> None:
            _probe_kernel[(triton.cdiv(n, tiling.outputs),)](
                x, packed, absmax, code, out, n, K=k, QBLOCK=blocksize, BLOCK_N=tiling.outputs,
                GROUPS=tiling.blocks, LOOKUP=lookup, num_warps=tiling.warps,
            )  # fmt: skip

        with torch.inference_mode():
            calls = {
                "bitsandbytes": lambda: layer(x),
                "worker": lambda: four_bit_gemv.four_bit_gemv(x, packed, absmax, code, shape, blocksize),
                "copy": lambda: probe(True),
                "no_lookup": lambda: probe(False),
            }
            row = {"shape": name, "tiling": tiling.__dict__}
            for form, call in calls.items():
                row[f"{form}_us"] = timed(call, graph=True)
                totals[form] += row[f"{form}_us"] * per_layer * LAYERS
            probe(True)
            row["copy_matches_worker"] = bool(torch.equal(out, calls["worker"]()))
        results.append(row)
        print(
            f"{name:8}: bitsandbytes {row['bitsandbytes_us']:6.1f} us, worker {row['worker_us']:6.1f}, copy "
            f"{row['copy_us']:6.1f} (same bits: {row['copy_matches_worker']}), no lookups {row['no_lookup_us']:6.1f}",
            flush=True,
        )
    print("per token: " + ", ".join(f"{form} {value / 1000:.2f} ms" for form, value in totals.items()), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"card": torch.cuda.get_device_name(), "rows": results}, indent=1))


if __name__ == "__main__":
    main()
