#!/usr/bin/env python3
"""Launches the worker's 4-bit decode kernels (GPU) at idefics2-8b's text shapes, for a profiler to read: the packed
tensor-core kernel (`packed_tiling_for`, on the layer packed as the fast decoder packs it), the unpacked one
(`mma_tiling_for`) and the CUDA-core one (`tiling_for`), each twice per shape and row count, the second launch being
the one to read (the first compiles and warms). Run under Nsight Compute, e.g.

    ncu --clock-control none --kernel-name regex:four_bit --nvtx \\
        --section SpeedOfLight --section WarpStateStats --section MemoryWorkloadAnalysis_Tables \\
        python scripts/gpu/profile_four_bit_kernels.py --rows 1 8

Each launch runs inside an NVTX range naming the kernel, the shape, the rows and warm/read (`--nvtx` shows them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from idefics2_worker.kernels import four_bit_cuda, four_bit_packing
from tune_decode_kernels import SHAPES, four_bit_operands


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    for name, k, n, _ in SHAPES:
        _, operands = four_bit_operands(k, n)
        codes, absmax, code, shape, blocksize = operands
        layer = four_bit_packing.pack(codes, absmax, shape, blocksize)
        products = {
            "packed": lambda x, layer=layer, o=(code, shape, blocksize): four_bit_cuda.four_bit_mma_packed_cuda(
                x, layer, *o
            ),
            "tensor cores": lambda x, o=operands: four_bit_cuda.four_bit_mma_cuda(x, *o),
            "cuda cores": lambda x, o=operands: four_bit_cuda.four_bit_gemv_cuda(x, *o),
        }
        for rows in args.rows:
            x = torch.randn(rows, k, device="cuda").to(torch.bfloat16)
            for kernel, product in products.items():
                for launch in ("warm", "read"):
                    with torch.cuda.nvtx.range(f"{kernel} {name} rows {rows} {launch}"):
                        product(x)
            torch.cuda.synchronize()
            print(f"{name} rows {rows}: launched", flush=True)


if __name__ == "__main__":
    main()
