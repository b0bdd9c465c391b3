#!/usr/bin/env python3
"""The packed 4-bit kernel's tilings timed as the decode step runs them (GPU): a token's 128 launches, 32 layers of
idefics2-8b's packed q/k/v, o, gate/up and down in the step's order, so that every layer's weights come from memory
(3.9 GB, far past L2), where `tune_four_bit_cuda.py` times one layer's calls back to back with its weights in L2.

For each shape, each candidate tiling replaces that shape's `packed_tiling_for` in the sequence; then the fastest
candidate of every shape together ("combined"). The variants are timed in rounds, each round replaying every
variant's CUDA graph in turn, and the median over rounds is reported with its ratio to the worker's tilings of the
same rounds (the card's speed drifts between runs more than between neighbouring replays). Each variant's outputs are
compared with the worker's: the same bits where the candidate keeps the shape's splits and unroll (the sums' order).

Usage: python scripts/gpu/bench_four_bit_sequence.py [--rows 1 8] [--rounds 9] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_rounds import GraphVariant, timed_in_rounds
from tune_decode_kernels import LAYERS, SHAPES

from idefics2_worker.kernels import four_bit_cuda, four_bit_packing
from idefics2_worker.kernels.four_bit_cuda import PackedTiling

BLOCKSIZE = 64
ONE_TILE = [
    PackedTiling(groups, splits, unroll, 1) for groups, splits in ((1, 8), (1, 16), (2, 8)) for unroll in (1, 2)
]
WIDE = [PackedTiling(groups, 4, 1, tiles) for groups in (2, 4) for tiles in (1, 2)] + [PackedTiling(8, 2, 1, 1)]
CANDIDATES = {"q/k/v": ONE_TILE, "o": ONE_TILE, "gate/up": WIDE, "down": ONE_TILE}


def packed_layers() -> list[tuple[str, tuple[int, int], four_bit_packing.PackedFourBit]]:
    """LAYERS times SHAPES packed layers of random codes and absmax, in the step's order."""
    layers = []
    for _ in range(LAYERS):
        for name, k, n, _count in SHAPES:
            codes = torch.randint(0, 256, (n * k // 2,), dtype=torch.uint8, device="cuda")
            absmax = torch.rand(n * k // BLOCKSIZE, device="cuda") * 0.05
            layers.append((name, (n, k), four_bit_packing.pack(codes, absmax, (n, k), BLOCKSIZE)))
    return layers


class Variant(GraphVariant):
    """The token's launches with `tilings` (by shape name)."""

    def __init__(self, label: str, tilings: dict[str, PackedTiling], run: Callable[[dict], list[torch.Tensor]]):
        self.tilings = tilings
        super().__init__(label, lambda: run(tilings))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.manual_seed(0)
    layers = packed_layers()
    worker = {name: four_bit_cuda.packed_tiling_for(n, k) for name, k, n, _ in SHAPES}
    every = {tiling for tilings in CANDIDATES.values() for tiling in tilings} | set(worker.values())
    compiled = four_bit_cuda.kernels(torch.bfloat16, torch.device("cuda"), {(1, t) for t in every})
    if compiled is None:
        raise SystemExit(f"the packed kernels did not compile: {four_bit_cuda._failed}")
    code = torch.linspace(-1.0, 1.0, 16, device="cuda")
    results = []
    for rows in args.rows:
        inputs = {
            k: (torch.randn(rows, k, device="cuda") * 0.5).to(torch.bfloat16) for k in {k for _, k, _, _ in SHAPES}
        }

        def run(tilings: dict[str, PackedTiling], inputs: dict = inputs) -> list[torch.Tensor]:
            return [
                four_bit_cuda.four_bit_mma_packed_cuda(
                    inputs[shape[1]], layer, code, shape, BLOCKSIZE, tiling=tilings[name], compiled=compiled
                )
                for name, shape, layer in layers
            ]

        base = Variant("worker", worker, run)
        variants = [base]
        for name, candidates in CANDIDATES.items():
            variants += [Variant(f"{name} {t}", {**worker, name: t}, run) for t in candidates if t != worker[name]]
        timed_in_rounds(variants, args.rounds)
        best: dict[str, PackedTiling] = {}
        for name in CANDIDATES:
            mine = [v for v in variants if v is base or v.label.startswith(f"{name} ")]
            best[name] = min(mine, key=lambda v: statistics.median(v.times)).tilings[name]
        combined = Variant("combined", best, run)
        again = Variant("worker (again)", worker, run)
        second = [combined, again]
        timed_in_rounds(second, args.rounds)
        for variant in [*variants, *second]:
            ms = statistics.median(variant.times)
            pair = again if variant in second else base
            paired = variant.paired(pair)
            same = all(torch.equal(a, b) for a, b in zip(variant.outs, base.outs, strict=True))
            entry = {
                "rows": rows,
                "variant": variant.label,
                "tilings": {name: list(vars(t).values()) for name, t in variant.tilings.items()},
                "ms": round(ms, 4),
                "min_ms": round(min(variant.times), 4),
                "vs_worker": round(paired, 4),
                "same_bits": same,
            }
            results.append(entry)
            print(
                f"rows {rows} {variant.label:60s} {ms:7.4f} ms ({paired:6.3f} of the worker's)  bits {same}", flush=True
            )
    summary = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "worker_tilings": {name: list(vars(t).values()) for name, t in worker.items()},
        "results": results,
    }
    print(json.dumps(summary))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
