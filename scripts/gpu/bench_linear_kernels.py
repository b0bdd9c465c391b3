#!/usr/bin/env python3
"""What bounds decode: the time of each linear kernel the decode step uses, at idefics2-8b's text-model shapes (GPU).

For each shape of a Mistral-7B layer (q, k/v, o, gate/up, down) and the LM head, at batch 1 and 8, times one call
of: bf16 `F.linear`; bitsandbytes nf4 (`Linear4bit.forward` with float32 compute, transformers' default, and
with bfloat16); bitsandbytes LLM.int8() (`Linear8bitLt.forward`, eager: it cannot be captured), its int8
product alone, and the worker's capturable form (`decode_linears` with the `int8_gemv` kernel). Calls are
replayed from CUDA graphs (20 per graph) so launch cost is not counted, except for the eager int8 forward.
Prints a table and, per kind, the sum over one token of the 32 layers plus the head. Also checks that the
worker's int8 form equals bitsandbytes' (max abs difference on the same input, outliers included).

Usage: python scripts/gpu/bench_linear_kernels.py [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import bitsandbytes as bnb
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
from idefics2_worker.decode.linears import DecodeLinears

LAYERS = 32
# (name, in, out, count per layer): Mistral-7B as in idefics2-8b.
SHAPES = [("q/o", 4096, 4096, 2), ("k/v", 4096, 1024, 2), ("gate/up", 4096, 14336, 2), ("down", 14336, 4096, 1)]
HEAD = ("head", 4096, 32003, 1)


def timed(fn: Callable[[], object], graph: bool, calls: int = 20, repeats: int = 5) -> float:
    """Microseconds per call."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    if graph:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(calls):
                fn()
        run = g.replay
    else:

        def run() -> None:
            for _ in range(calls):
                fn()

    run()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        run()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000.0 / (calls * repeats)


def worker_forward(module: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    holder = SimpleNamespace(model=SimpleNamespace(text_model=torch.nn.Sequential(module)), lm_head=torch.nn.Identity())
    holder.device = torch.device("cuda")
    linears = DecodeLinears(holder)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with linears.capturable():
            return module(x)

    return forward


def four_bit(weight: torch.Tensor, compute: torch.dtype) -> torch.nn.Module:
    k = weight.shape[1]
    layer = bnb.nn.Linear4bit(k, weight.shape[0], bias=False, compute_dtype=compute, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(weight.clone(), requires_grad=False, quant_type="nf4", compress_statistics=False)
    return layer.cuda()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows, totals = [], {}
    for name, k, n, per_layer in [*SHAPES, HEAD]:
        weight = torch.randn(n, k, dtype=torch.bfloat16) * 0.02
        dense = torch.nn.Linear(k, n, bias=False, dtype=torch.bfloat16)
        dense.weight.data.copy_(weight)
        dense = dense.cuda()
        nf4 = four_bit(weight, torch.float32)
        nf4_bf16 = four_bit(weight, torch.bfloat16)
        int8 = bnb.nn.Linear8bitLt(k, n, bias=False, has_fp16_weights=False, threshold=6.0)
        int8.weight = bnb.nn.Int8Params(weight.clone(), requires_grad=False, has_fp16_weights=False)
        int8 = int8.cuda()
        int8_graphable = worker_forward(int8)
        with torch.inference_mode():
            x1 = torch.randn(1, k, dtype=torch.bfloat16, device="cuda")
            x1[0, :3] = 9.0  # three outlier columns, as LLM.int8() sees in real activations
            reference = int8(x1)
            ours = int8_graphable(x1)
            int8_err = (ours.float() - reference.float()).abs().max().item()
            for batch in (1, 8):
                x = torch.randn(batch, k, dtype=torch.bfloat16, device="cuda")
                kinds = {"bf16": (lambda x=x, f=dense: f(x), True, 2.0)}
                if name != "head" or batch == 1:
                    # The head stays bf16 in a quantized model; bitsandbytes' 4-bit GEMM also faults on its odd
                    # width (32003) at batch > 1.
                    kinds["nf4 (bitsandbytes, float32)"] = (lambda x=x, f=nf4: f(x), True, 0.5 + 4 / 64)
                    kinds["nf4 (bitsandbytes, bfloat16)"] = (lambda x=x, f=nf4_bf16: f(x), True, 0.5 + 4 / 64)
                    kinds["int8 (bitsandbytes, eager)"] = (lambda x=x, f=int8: f(x), False, 1.0 + 4 / k)
                    kinds["int8 (worker, capturable)"] = (lambda x=x, f=int8_graphable: f(x), True, 1.0 + 4 / k)
                    padded = torch.zeros(32, k, dtype=torch.int8, device="cuda")
                    kinds["int8 product only (bitsandbytes)"] = (
                        lambda p=padded[:batch], w=int8.state.CB: torch.ops.bitsandbytes.int8_linear_matmul.default(
                            p, w
                        ),
                        True,
                        1.0,
                    )
                for kind, (fn, graph, bytes_per_weight) in kinds.items():
                    us = timed(fn, graph)
                    gb_s = n * k * bytes_per_weight / (us * 1e-6) / 1e9
                    count = per_layer * (LAYERS if name != "head" else 1)
                    totals.setdefault((kind, batch), 0.0)
                    totals[(kind, batch)] += us * count
                    rows.append(
                        {
                            "shape": name,
                            "in": k,
                            "out": n,
                            "batch": batch,
                            "kernel": kind,
                            "us": round(us, 1),
                            "weight_gb_s": round(gb_s),
                        }
                    )
                    print(f"{name:8} {k:6}x{n:<6} batch {batch} {kind:28} {us:9.1f} us {gb_s:8.0f} GB/s", flush=True)
        print(
            f"{name}: worker int8 vs bitsandbytes max abs diff {int8_err}",
            flush=True,
        )
        rows.append(
            {
                "shape": name,
                "int8_capturable_vs_bitsandbytes_max_abs": int8_err,
            }
        )
        torch.cuda.empty_cache()
    summary = []
    for (kind, batch), us in sorted(totals.items()):
        summary.append(
            {
                "kernel": kind,
                "batch": batch,
                "ms_per_token_linears": round(us / 1000, 2),
                "tok_s_bound": round(1e6 / us, 1),
            }
        )
        print(
            f"per token, linears only: {kind:28} batch {batch}: {us / 1000:7.2f} ms -> at most {1e6 / us:7.1f} steps/s"
        )
    if args.out:
        Path(args.out).write_text(
            json.dumps({"card": torch.cuda.get_device_name(), "rows": rows, "per_token": summary}, indent=2)
        )


if __name__ == "__main__":
    main()
