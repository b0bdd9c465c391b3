#!/usr/bin/env python3
"""The prefill's 4-bit dequantisation from the fast decoder's packed layout against bitsandbytes' (GPU).

`four_bit_dequantize` reads either layout; a prefill dequantises each of idefics2-8b's 224 4-bit text layers once.
Times, per text shape and output dtype (CUDA graphs, µs a call), the kernel on bitsandbytes' layout and on the packed
layout, and checks that both give the same bits. Prints a line a case and the sums over the 32 layers (ms a prefill);
--out writes JSON. (H50 measured two earlier forms of the packed read, kept in its JSON: a gather byte by byte in
bitsandbytes' order, 10.6 ms a prefill at fp16, and a walk of the packed bytes in order with the weights scattered,
13.4 ms, against 6.3 ms for bitsandbytes' layout.)

Usage: python scripts/gpu/bench_packed_dequantize.py [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
from bench_linear_kernels import timed
from idefics2_worker.kernels import four_bit_packing
from idefics2_worker.kernels.four_bit_dequantize import four_bit_dequantize

LAYERS = 32
# idefics2-8b's 4-bit text layers a layer: (name, outputs, inputs, count).
SHAPES = [("q", 4096, 4096, 1), ("k/v", 1024, 4096, 2), ("o", 4096, 4096, 1), ("gate/up", 14336, 4096, 2),
          ("down", 4096, 14336, 1)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda")
    torch.manual_seed(0)
    rows, totals = [], {}
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        for name, n, k, count in SHAPES:
            codes = torch.randint(0, 256, (n * k // 2, 1), dtype=torch.uint8, device=device)
            state = SimpleNamespace(
                shape=(n, k), absmax=torch.rand(n * k // 64, device=device), code=torch.randn(16, device=device),
                blocksize=64,
            )  # fmt: skip
            layer = four_bit_packing.pack(codes, state.absmax, (n, k), 64).part(0, n // 16)
            runs = {
                "plain_us": lambda c=codes, s=state, d=dtype: four_bit_dequantize(c, s, d),
                "packed_us": lambda c=codes, s=state, d=dtype, p=layer: four_bit_dequantize(c, s, d, p),
            }
            plain = runs["plain_us"]()
            entry = {"dtype": str(dtype).removeprefix("torch."), "shape": name, "n": n, "k": k}
            entry |= {f"same_{key[:-3]}": bool(torch.equal(run(), plain)) for key, run in runs.items()}
            entry |= {key: round(timed(run, graph=True), 2) for key, run in runs.items()}
            rows.append(entry)
            print(json.dumps(entry), flush=True)
            for key in runs:
                sums = totals.setdefault(entry["dtype"], {})
                sums[key[:-3] + "_ms"] = round(sums.get(key[:-3] + "_ms", 0.0) + entry[key] * count * LAYERS / 1000, 3)
    for dtype, sums in totals.items():
        print(f"a prefill's 224 layers, {dtype}: {sums}", flush=True)
    if args.out:
        found = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__}
        args.out.write_text(json.dumps(found | {"results": rows, "per_prefill_ms": totals}, indent=1))


if __name__ == "__main__":
    main()
