#!/usr/bin/env python3
"""The decode step with its plain linears on cuBLAS or on the batch-invariant Triton matmul, its kernels launched one
way or another (GPU), side by side.

Loads idefics2-8b as the SDK does (bf16 by default: the projections are plain linears there; at 4-bit and 8-bit only
the lm_head is, and the launch variants apply to the step's Triton kernels), then builds the fast decoder's step once
per variant and times its captured graph at 1 and 8 rows (`profile_decode_step.replay_ms`, the same 900 cached
positions), variants alternated for `--rounds` rounds, plus one eager profile per variant in the first (the kernels'
own GPU time, and the kernels per step; eager steps launch plainly):

- `cublas`: the projections on torch's linear (the default mode before change 65), the step's Triton kernels (the
  lm_head's matmul among them) launched programmatically, each letting the next place its blocks before it waits
  (`TRIGGER_FIRST`); `cublas, wait first`: every one waits first (`WAIT_FIRST`); `cublas, head plain`: the lm_head's
  matmul launched plainly;
- `triton`: the projections on `batch_invariant_matmul` at `tiling_for`'s tilings, launched as the step's other
  kernels (change 65); `triton, plain launches`: the matmul and its sum of splits launched plainly; `triton, wait
  first`: every kernel waits first; `triton, trigger late`: the matmul waits first and lets the next kernel place its
  blocks after its loop (`TRIGGER_LATE`); both; plain launches at H65's fastest tilings; `triton, the matmul waits
  first`: the matmul (and its sum of splits) `WAIT_FIRST`, the other kernels `TRIGGER_FIRST`;
- `triton, int8 kernels plain` (8-bit): the int8 products and the o / down inputs' quantisation launched plainly, as
  before change 66;
- `triton, weights after the wait`: the linears' kernels read their first block of weights after the wait, as
  before change 68 (`programmatic_launch.WEIGHTS_FIRST`);
- `triton, split sums in their own kernel` (bf16): o's and down's split products summed by `_sum_splits_kernel`
  before the add + norm, as before change 70 (`DecodeLinears.split_product`);
- `deterministic`: the whole deterministic step (the same linears as `triton`; the rest as the default's).

Prints one JSON line at the end (`--out` writes it too).

Usage: python scripts/gpu/compare_step_linears.py --model DIR [--quantization bf16] [--variants ...] [--rounds 2]
    [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from statistics import median
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_decode_step import eager_kernel_totals, load, prepare, replay_ms

from idefics2_worker.decode import fused_projections, linears
from idefics2_worker.decode.graphs import DecodeGraphs
from idefics2_worker.kernels import batch_invariant_matmul, int8_gemv, int8_quantize, programmatic_launch
from idefics2_worker.kernels.batch_invariant_matmul import Tiling
from idefics2_worker.kernels.triton_support import TRIGGER_LATE, WAIT_FIRST

# H65's fastest tiling at one row per (outputs, inputs) (`-matmul-tilings-h65.json`); other shapes keep tiling_for's.
H65_TILINGS = {
    (6144, 4096): Tiling(outputs=32, step=256, splits=2, stages=3),
    (4096, 4096): Tiling(outputs=64, step=128, splits=2, stages=3),
    (28672, 4096): Tiling(outputs=32, step=128, splits=1, stages=3),
    (4096, 14336): Tiling(outputs=32, step=128, splits=2, stages=5),
}


@contextmanager
def patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    before = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, before)


@contextmanager
def cublas() -> Iterator[None]:
    def deterministic_only(_weight: torch.Tensor, deterministic: bool) -> bool:
        return deterministic

    with (
        patched(linears, "runs_invariant_matmul", deterministic_only),
        patched(fused_projections, "runs_invariant_matmul", deterministic_only),
    ):
        yield


@contextmanager
def matmul_launches(order: int) -> Iterator[None]:
    """The matmul's launches (its sum of splits' too) at `order` where the step's kernels launch programmatically; 0:
    plain."""
    options = programmatic_launch.triton_options

    def matmul_options(device: torch.device) -> dict[str, Any]:
        chosen = options(device)
        if not chosen["PDL"]:
            return chosen
        return {"PDL": order, "launch_pdl": True} if order else {"PDL": 0}

    with patched(batch_invariant_matmul, "programmatic_launch", SimpleNamespace(triton_options=matmul_options)):
        yield


@contextmanager
def int8_plain() -> Iterator[None]:
    """The 8-bit step's int8 products and its o / down inputs' quantisation launched plainly (before change 66); the
    norm with the input's quantisation keeps the step's launches."""
    plain = SimpleNamespace(triton_options=lambda _device: {"PDL": 0})
    with patched(int8_gemv, "programmatic_launch", plain), patched(int8_quantize, "programmatic_launch", plain):
        yield


@contextmanager
def weights_after_the_wait() -> Iterator[None]:
    with patched(programmatic_launch, "WEIGHTS_FIRST", False):
        yield


@contextmanager
def split_sums_apart() -> Iterator[None]:
    with patched(linears.DecodeLinears, "split_product", lambda _self, module, x: module(x)):
        yield


@contextmanager
def every_kernel(order: int) -> Iterator[None]:
    with patched(programmatic_launch, "ORDER", order):
        yield


@contextmanager
def tilings(choose: Callable[[int, int], Tiling]) -> Iterator[None]:
    with patched(batch_invariant_matmul, "tiling_for", choose):
        yield


def h65(n: int, k: int) -> Tiling:
    return H65_TILINGS.get((n, k)) or batch_invariant_matmul.Tiling(splits=1, stages=3)


@contextmanager
def nothing() -> Iterator[None]:
    yield


VARIANTS: dict[str, tuple[Callable[[], Any], bool]] = {
    "cublas": (cublas, False),
    "cublas, wait first": (lambda: stacked(cublas(), every_kernel(WAIT_FIRST)), False),
    "cublas, head plain": (lambda: stacked(cublas(), matmul_launches(0)), False),
    "triton": (nothing, False),
    "triton, plain launches": (lambda: matmul_launches(0), False),
    "triton, wait first": (lambda: every_kernel(WAIT_FIRST), False),
    "triton, trigger late": (lambda: matmul_launches(TRIGGER_LATE), False),
    "triton, wait first, trigger late": (
        lambda: stacked(every_kernel(WAIT_FIRST), matmul_launches(TRIGGER_LATE)),
        False,
    ),
    "triton, plain, tilings of H65": (lambda: stacked(matmul_launches(0), tilings(h65)), False),
    "triton, the matmul waits first": (lambda: matmul_launches(WAIT_FIRST), False),
    "triton, int8 kernels plain": (int8_plain, False),
    "triton, weights after the wait": (weights_after_the_wait, False),
    "triton, split sums in their own kernel": (split_sums_apart, False),
    "deterministic": (nothing, True),
}


@contextmanager
def stacked(*contexts: Any) -> Iterator[None]:
    with ExitStack() as stack:
        for context in contexts:
            stack.enter_context(context)
        yield


def measure(model: Any, name: str, profile: bool) -> dict[str, Any]:
    context, deterministic = VARIANTS[name]
    with context():
        graphs = DecodeGraphs(model, 8, use_graphs=True, deterministic=deterministic)
        prepare(graphs)
        result: dict[str, Any] = {"batch1_ms": replay_ms(graphs, 1), "batch8_ms": replay_ms(graphs, 8)}
        if profile:
            totals = eager_kernel_totals(graphs, 1)
            ranked = sorted(totals.items(), key=lambda kv: -kv[1][0])
            result["eager_gpu_ms_batch1"] = round(sum(v[0] for v in totals.values()) / 1000, 3)
            result["kernels_batch1"] = round(sum(v[1] for v in totals.values()))
            result["top_kernels_batch1"] = [[n[:90], round(us / 1000, 3), round(c)] for n, (us, c) in ranked[:10]]
        graphs.release()
    del graphs
    torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--quantization", choices=["bf16", "4bit", "8bit"], default="bf16")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--out")
    args = parser.parse_args()
    engine = load(args.model, args.quantization)
    engine.batch.release()
    model = engine.loaded.model
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.variants}
    for round_index in range(args.rounds):
        order = args.variants if round_index % 2 == 0 else list(reversed(args.variants))
        for name in order:
            run = measure(model, name, profile=round_index == 0)
            runs[name].append(run)
            print(f"round {round_index + 1} {name}: {json.dumps(run)}", flush=True)
    summary = {
        name: {
            "batch1_ms": round(median(r["batch1_ms"] for r in rs), 3),
            "batch8_ms": round(median(r["batch8_ms"] for r in rs), 3),
            "batch1_each": [round(r["batch1_ms"], 3) for r in rs],
            "batch8_each": [round(r["batch8_ms"], 3) for r in rs],
            **{k: v for k, v in rs[0].items() if not k.startswith("batch")},
        }
        for name, rs in runs.items()
    }
    for name, s in summary.items():
        print(f"{name:28} one row {s['batch1_ms']:.3f} ms  8 rows {s['batch8_ms']:.3f} ms  {s['batch1_each']}")
    line = json.dumps({"card": torch.cuda.get_device_name(), "quantization": args.quantization, "variants": summary})
    print(line)
    if args.out:
        Path(args.out).write_text(line + "\n")


if __name__ == "__main__":
    main()
