#!/usr/bin/env python3
"""The decode step's attention (`batch_invariant_attention`) and variants of its merge, timed as the step runs them
(GPU): 32 layers' calls over their own KV caches at the blog's length, launched programmatically and captured as one
CUDA graph per variant, replayed in interleaved rounds; each variant reported as the median of its ratios to the
landed kernel's time in the same rounds, with its largest difference from the landed output.

Variants: the landed kernels; their merge at other warp counts; the split kernel alone and with a merge that only
stores (the floor a second launch leaves); the merge of H56 (one split after another); and the merge folded into the
split kernel, done by the last program of each row and KV head to finish (an atomic ticket), one split after another
or CHUNK at once.

Usage: python scripts/gpu/bench_decode_attention.py [--rows 1 8] [--position 900] [--rounds 9] [--out FILE.json]
"""

# Triton's @jit kernels take launch options (num_warps) and tl.constexpr parameters that its types do not describe,
# their operands positionally, and name compile-time constants in capitals (as in idefics2_worker/kernels).
# ruff: noqa: N803, PLR0917
# pyright: reportCallIssue=false, reportArgumentType=false, reportGeneralTypeIssues=false, reportOptionalMemberAccess=false

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

from idefics2_worker.kernels import batch_invariant_attention as attention
from idefics2_worker.kernels import programmatic_launch
from idefics2_worker.kernels.batch_invariant_matmul import dot_mode
from idefics2_worker.kernels.triton_support import start_after_previous, tl, triton

LAYERS, KV_HEADS, GROUP, DIM, LENGTH = 32, 8, 4, 128, 1152


@triton.jit
def _sequential_combine(part_acc, part_best, part_total, positions, out, LENGTH, SPLITS, KV_HEADS: tl.constexpr,
                        GROUP: tl.constexpr, DIM: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr,
                        BLOCK_L: tl.constexpr, PDL: tl.constexpr):  # fmt: skip
    start_after_previous(PDL)
    row = tl.program_id(0)
    head = tl.program_id(1)
    _sequential_merge(part_acc, part_best, part_total, positions, out, row, head, LENGTH, SPLITS, KV_HEADS, GROUP,
                      DIM, BLOCK_G, BLOCK_D, BLOCK_L, "")  # fmt: skip


@triton.jit
def _sequential_merge(part_acc, part_best, part_total, positions, out, row, head, LENGTH, SPLITS,
                      KV_HEADS: tl.constexpr, GROUP: tl.constexpr, DIM: tl.constexpr, BLOCK_G: tl.constexpr,
                      BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, CACHE: tl.constexpr):  # fmt: skip
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    first = (row * KV_HEADS + head) * SPLITS
    best = tl.full([BLOCK_G], -1.0e30, dtype=tl.float32)
    total = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], dtype=tl.float32)
    count = tl.cdiv(tl.minimum(tl.load(positions + row) + 1, LENGTH), BLOCK_L)
    g_ok = g < GROUP
    for split in range(count):
        part = (first + split) * BLOCK_G
        split_best = tl.load(part_best + part + g, mask=g_ok, other=-1.0e30, cache_modifier=CACHE)
        new_best = tl.maximum(best, split_best)
        kept = tl.exp(best - new_best)
        added = tl.exp(split_best - new_best)
        total = total * kept + tl.load(part_total + part + g, mask=g_ok, other=0.0, cache_modifier=CACHE) * added
        at = (part + g[:, None]) * BLOCK_D + d[None, :]
        split_acc = tl.load(part_acc + at, mask=g_ok[:, None], other=0.0, cache_modifier=CACHE)
        acc = acc * kept[:, None] + split_acc * added[:, None]
        best = new_best
    q_ok = g_ok[:, None] & (d < DIM)[None, :]
    out_at = ((row * KV_HEADS + head) * GROUP + g[:, None]) * DIM + d[None, :]
    tl.store(out + out_at, (acc / total[:, None]).to(out.dtype.element_ty), mask=q_ok)


@triton.jit
def _storing_combine(positions, out, KV_HEADS: tl.constexpr, GROUP: tl.constexpr, DIM: tl.constexpr,
                     BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, PDL: tl.constexpr):  # fmt: skip
    start_after_previous(PDL)
    row = tl.program_id(0)
    head = tl.program_id(1)
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    value = tl.load(positions + row).to(tl.float32)
    q_ok = (g < GROUP)[:, None] & (d < DIM)[None, :]
    out_at = ((row * KV_HEADS + head) * GROUP + g[:, None]) * DIM + d[None, :]
    tl.store(out + out_at, tl.zeros([BLOCK_G, BLOCK_D], dtype=tl.float32) + value, mask=q_ok)


@triton.jit
def _folded_kernel(query, keys, values, mask, positions, part_acc, part_best, part_total, tickets, out, LENGTH,
                   MASK_LENGTH, SPLITS, scale, KV_HEADS: tl.constexpr, GROUP: tl.constexpr, DIM: tl.constexpr,
                   BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_H: tl.constexpr,
                   CHUNK: tl.constexpr, SEQUENTIAL: tl.constexpr, DOT: tl.constexpr,
                   PDL: tl.constexpr):  # fmt: skip
    start_after_previous(PDL)
    row = tl.program_id(0)
    head = tl.program_id(1)
    end = attention._split_partial(query, keys, values, mask, positions, part_acc, part_best, part_total, row, head,
                                   tl.program_id(2), LENGTH, MASK_LENGTH, SPLITS, scale, KV_HEADS, GROUP, DIM,
                                   BLOCK_G, BLOCK_D, BLOCK_L, DOT)  # fmt: skip
    # Every thread's stores before the ticket; the ticket's release publishes them, its acquire (in the last program)
    # orders the merge's reads after every other program's stores.
    tl.debug_barrier()
    ticket = tl.atomic_add(tickets + row * KV_HEADS + head, 1, sem="acq_rel", scope="gpu")
    if ticket == SPLITS - 1:
        tl.atomic_xchg(tickets + row * KV_HEADS + head, 0, sem="relaxed", scope="gpu")
        if SEQUENTIAL:
            _sequential_merge(part_acc, part_best, part_total, positions, out, row, head, LENGTH, SPLITS, KV_HEADS,
                              GROUP, DIM, BLOCK_G, BLOCK_D, BLOCK_L, ".cg")  # fmt: skip
        else:
            first = (row * KV_HEADS + head) * SPLITS
            count = tl.cdiv(end, BLOCK_L)
            attention._merge_into(out, part_acc, part_best, part_total, row, head, first, count, tl.cdiv(count, CHUNK),
                                  CHUNK, KV_HEADS, GROUP, DIM, BLOCK_G, BLOCK_D, BLOCK_H)  # fmt: skip


class Layer:
    """One layer's query, KV cache, mask and partials at `rows` rows."""

    def __init__(self, rows: int, position: int):
        bf16 = torch.bfloat16
        self.query = torch.randn(rows, KV_HEADS, GROUP, DIM, device="cuda").to(bf16)
        self.keys = torch.randn(rows, KV_HEADS, LENGTH, DIM, device="cuda").to(bf16)
        self.values = torch.randn(rows, KV_HEADS, LENGTH, DIM, device="cuda").to(bf16)
        self.positions = torch.full((rows,), position, dtype=torch.long, device="cuda")
        self.mask = (torch.arange(LENGTH, device="cuda")[None, :] <= self.positions[:, None]).contiguous()
        self.splits = triton.cdiv(LENGTH, attention.BLOCK_POSITIONS)
        self.part_acc = torch.empty(rows, KV_HEADS, self.splits, 16, DIM, device="cuda")
        self.part_best = torch.empty(rows, KV_HEADS, self.splits, 16, device="cuda")
        self.part_total = torch.empty_like(self.part_best)
        self.tickets = torch.zeros(rows * KV_HEADS, dtype=torch.int32, device="cuda")
        self.out = torch.zeros_like(self.query)


def split(layer: Layer) -> None:
    rows = layer.query.shape[0]
    attention._split_kernel[(rows, KV_HEADS, layer.splits)](
        layer.query, layer.keys, layer.values, layer.mask, layer.positions, layer.part_acc, layer.part_best,
        layer.part_total, LENGTH, LENGTH, layer.splits, DIM**-0.5, KV_HEADS=KV_HEADS, GROUP=GROUP, DIM=DIM,
        BLOCK_G=16, BLOCK_D=DIM, BLOCK_L=attention.BLOCK_POSITIONS, DOT=dot_mode(torch.bfloat16), num_warps=4,
        **programmatic_launch.triton_options(layer.query.device),
    )  # fmt: skip


def shapes() -> dict[str, int]:
    return {"KV_HEADS": KV_HEADS, "GROUP": GROUP, "DIM": DIM, "BLOCK_G": 16, "BLOCK_D": DIM}


def landed(layer: Layer) -> torch.Tensor:
    return attention.decode_attention(layer.query, layer.keys, layer.values, layer.mask[:, None, None, :],
                                      layer.positions, DIM**-0.5)  # fmt: skip


def chunked(warps: int, chunk: int = attention.MERGE_CHUNK) -> Callable[[Layer], torch.Tensor]:
    def run(layer: Layer) -> torch.Tensor:
        split(layer)
        attention._combine_kernel[(layer.query.shape[0], KV_HEADS)](
            layer.part_acc, layer.part_best, layer.part_total, layer.positions, layer.out, LENGTH, layer.splits,
            **shapes(), BLOCK_L=attention.BLOCK_POSITIONS, BLOCK_H=GROUP, CHUNK=chunk, STATIC_CHUNKS=0,
            num_warps=warps, **programmatic_launch.triton_options(layer.query.device),
        )  # fmt: skip
        return layer.out

    return run


def sequential(layer: Layer) -> torch.Tensor:
    split(layer)
    _sequential_combine[(layer.query.shape[0], KV_HEADS)](
        layer.part_acc, layer.part_best, layer.part_total, layer.positions, layer.out, LENGTH, layer.splits,
        **shapes(), BLOCK_L=attention.BLOCK_POSITIONS, num_warps=4,
        **programmatic_launch.triton_options(layer.query.device),
    )  # fmt: skip
    return layer.out


def split_only(layer: Layer) -> torch.Tensor:
    split(layer)
    return layer.out


def storing(layer: Layer) -> torch.Tensor:
    split(layer)
    _storing_combine[(layer.query.shape[0], KV_HEADS)](
        layer.positions, layer.out, **shapes(), num_warps=4, **programmatic_launch.triton_options(layer.query.device)
    )
    return layer.out


def folded(one_by_one: bool) -> Callable[[Layer], torch.Tensor]:
    def run(layer: Layer) -> torch.Tensor:
        _folded_kernel[(layer.query.shape[0], KV_HEADS, layer.splits)](
            layer.query, layer.keys, layer.values, layer.mask, layer.positions, layer.part_acc, layer.part_best,
            layer.part_total, layer.tickets, layer.out, LENGTH, LENGTH, layer.splits, DIM**-0.5, **shapes(),
            BLOCK_L=attention.BLOCK_POSITIONS, BLOCK_H=GROUP, CHUNK=attention.MERGE_CHUNK, SEQUENTIAL=one_by_one,
            DOT=dot_mode(torch.bfloat16), num_warps=4, **programmatic_launch.triton_options(layer.query.device),
        )  # fmt: skip
        return layer.out

    return run


VARIANTS: dict[str, Callable[[Layer], torch.Tensor]] = {
    f"landed: split + chunked merge, {attention.MERGE_WARPS} warps": landed,
    "chunked merge, 1 warp": chunked(1),
    "chunked merge, 4 warps": chunked(4),
    "chunked merge, 8 warps": chunked(8),
    "chunked merge, 2 warps, 8 splits a chunk": chunked(2, 8),
    "chunked merge, 2 warps, 32 splits a chunk": chunked(2, 32),
    "split + merge one split after another (H56)": sequential,
    "split alone": split_only,
    "split + a merge that only stores": storing,
    "folded, one split after another": folded(True),
    "folded, chunked": folded(False),
}


def captured(label: str, run: Callable[[Layer], torch.Tensor], layers: list[Layer]) -> GraphVariant:
    """LAYERS calls of `run`, programmatically launched (the first eager call compiles the programmatic forms)."""
    with programmatic_launch.decode_graph():
        for layer in layers:
            run(layer)
        return GraphVariant(label, lambda: [run(layer) for layer in layers])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--position", type=int, default=900)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.manual_seed(0)
    results = []
    for rows in args.rows:
        layers = [Layer(rows, args.position) for _ in range(LAYERS)]
        variants = [captured(label, run, layers) for label, run in VARIANTS.items()]
        timed_in_rounds(variants, args.rounds)
        base = variants[0]
        for variant in variants:
            ms = statistics.median(variant.times)
            paired = variant.paired(base)
            pairs = zip(variant.outs, base.outs, strict=True)
            differences = [(a.float() - b.float()).abs().max().item() for a, b in pairs]
            entry = {"rows": rows, "variant": variant.label, "ms": round(ms, 4), "vs_landed": round(paired, 4),
                     "max_difference": max(differences)}  # fmt: skip
            if variant.label.startswith("folded, one"):
                reference = next(v for v in variants if v.label.startswith("split + merge one"))
                entry["same_bits_as_one_by_one"] = all(map(torch.equal, variant.outs, reference.outs))
            results.append(entry)
            print(json.dumps(entry), flush=True)
    if args.out:
        summary = {"device": torch.cuda.get_device_name(), "position": args.position, "layers": LAYERS}
        Path(args.out).write_text(json.dumps({**summary, "results": results}, indent=1))


if __name__ == "__main__":
    main()
