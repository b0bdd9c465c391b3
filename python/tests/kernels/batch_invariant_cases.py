"""The batch-invariant kernels (and the 4-bit product deterministic decoding runs, the int8 product's row-invariant
form): a row's result is the same bits in a batch of 1, 3, 8 or 20 rows, and close to torch's.

Prints one JSON line: per case, `invariant` (every batch gave the row alone's bits) and `steps` (the largest
difference from torch's float64 result, in rounding steps of the output dtype at that value). Run on a GPU machine
as `python tests/kernels/batch_invariant_cases.py --device cuda`, and on CPU by test_batch_invariant_kernels.py under
Triton's interpreter.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from idefics2_worker.decode.linears import four_bit_product
from idefics2_worker.kernels import batch_invariant_attention, batch_invariant_matmul, int8_gemv
from idefics2_worker.kernels.batch_invariant_matmul import Tiling

BATCHES = (1, 3, 8, 20)
# The int8 CUDA-core kernel for several rows, each lane's sums kept per row (`int8_gemv`, not the default there).
CUDA_CORE_ROWS = int8_gemv.Tiling(outputs=4, columns=128, warps=2)


def steps(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """Largest |ours - theirs| in rounding steps of ours' dtype, at the larger of the value and the rows' scale."""
    scale = torch.finfo(ours.dtype).eps * theirs.abs().amax(dim=-1, keepdim=True).clamp_min(1e-30)
    return float(((ours.double() - theirs) / scale).abs().max().item())


def placed(target: torch.Tensor, others: torch.Tensor, size: int, at: int) -> torch.Tensor:
    """A batch of `size` rows: `others`' first rows with `target` at row `at`."""
    batch = others[:size].clone()
    batch[at] = target
    return batch


def matmul_cases(device: str) -> dict[str, dict[str, object]]:
    results: dict[str, dict[str, object]] = {}
    cases = [
        (40, 256, None, False),  # the default tiling for a small weight
        (48, 200, Tiling(rows=16, outputs=16, step=32, splits=3), True),  # K not a multiple of the step, split
        (100, 96, Tiling(rows=16, outputs=32, step=64, splits=1), False),
        (136, 300, batch_invariant_matmul.HEAD_TILING, False),  # the lm_head's: outputs past a tile, K past a step
    ]
    for dtype in (torch.bfloat16, torch.float32):
        for n, k, tiling, bias in cases:
            generator = torch.Generator().manual_seed(n * k)
            weight = (torch.randn(n, k, generator=generator) * 0.1).to(dtype).to(device)
            b = torch.randn(n, generator=generator).to(dtype).to(device) if bias else None
            target = torch.randn(k, generator=generator).to(dtype).to(device)
            alone = batch_invariant_matmul.linear(target[None], weight, b, tiling)[0]
            invariant = True
            for size in BATCHES:
                others = torch.randn(max(BATCHES), k, generator=generator).to(dtype).to(device)
                at = size // 2
                out = batch_invariant_matmul.linear(placed(target, others, size, at), weight, b, tiling)
                invariant = invariant and torch.equal(out[at], alone)
            reference = torch.nn.functional.linear(
                target[None].double(), weight.double(), None if b is None else b.double()
            )[0]
            split = " split" if tiling and tiling.splits > 1 else ""
            name = f"linear {str(dtype).removeprefix('torch.')} {n}x{k}{split}"
            results[name] = {"invariant": invariant, "steps": steps(alone, reference)}
    return results


def four_bit_cases(device: str) -> dict[str, dict[str, object]]:
    """The 4-bit product deterministic decoding runs (batches over 8 rows run in several launches)."""
    import bitsandbytes as bnb

    results: dict[str, dict[str, object]] = {}
    # On CUDA also a K of idefics2-8b's width: the CUDA kernel's warps then take several passes along it.
    shapes = ((40, 256), (24, 384), *(((136, 4096),) if device.startswith("cuda") else ()))
    for n, k in shapes:
        generator = torch.Generator().manual_seed(n * k)
        layer = bnb.nn.Linear4bit(k, n, bias=False, compute_dtype=torch.float32, quant_type="nf4")
        weight = (torch.randn(n, k, generator=generator) * 0.05).to(torch.bfloat16)
        layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4", compress_statistics=False)
        layer = layer.to(device)
        state = layer.weight.quant_state
        operands = (layer.weight.data.view(-1), state.absmax, state.code, (n, k), state.blocksize)

        def product(rows: torch.Tensor, operands: tuple = operands) -> torch.Tensor:
            # What deterministic decoding runs: the tensor-core kernel on CUDA, the invariant Triton tiling elsewhere.
            return four_bit_product(rows, *operands, deterministic=True)

        target = torch.randn(k, generator=generator).to(torch.bfloat16).to(device)
        alone = product(target[None])[0]
        invariant = True
        for size in BATCHES:
            others = torch.randn(max(BATCHES), k, generator=generator).to(torch.bfloat16).to(device)
            at = size - 1  # in a batch of 20, the last launch's rows
            invariant = invariant and torch.equal(product(placed(target, others, size, at))[at], alone)
        dense = bnb.functional.dequantize_4bit(layer.weight.data, state).double()
        reference = torch.nn.functional.linear(target[None].double(), dense)[0]
        results[f"four_bit nf4 {n}x{k}"] = {"invariant": invariant, "steps": steps(alone, reference)}
    return results


def with_outliers(rows: torch.Tensor, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """The rows with 40 outliers each (past LLM.int8()'s threshold of 6; 6.5 to ~2,600, so the order of their
    float32 sum shows in float32 outputs), in columns of their own."""
    spots = torch.randint(0, rows.shape[1], (rows.shape[0], 40), generator=generator)
    magnitudes = 6.5 * torch.exp(6 * torch.rand(spots.shape, generator=generator))
    signs = torch.randint(0, 2, spots.shape, generator=generator) * 2 - 1
    rows[torch.arange(rows.shape[0])[:, None], spots] = magnitudes * signs
    return rows.to(dtype)


def eight_bit_cases(device: str) -> dict[str, dict[str, object]]:
    """The int8 product's row-invariant form: one row takes the one-row kernel, a batch the MMA kernel (launches of
    16 rows) or the CUDA-core kernel's several-row form (launches of 8), and the row's bits must not change."""
    from idefics2_worker.kernels import int8_quantize

    results: dict[str, dict[str, object]] = {}
    for (n, k), dtype in itertools.product(((40, 256), (24, 384)), (torch.bfloat16, torch.float32)):
        generator = torch.Generator().manual_seed(n + k)
        weight = torch.randint(-127, 128, (n, k), generator=generator, dtype=torch.int8).to(device)
        scales = (torch.rand(n, generator=generator) + 0.5).to(device)

        def product(
            rows: torch.Tensor,
            tiling: int8_gemv.Tiling | None = None,
            weight: torch.Tensor = weight,
            scales: torch.Tensor = scales,
        ) -> torch.Tensor:
            q = int8_quantize.quantize_rows(rows, 6.0, row_invariant=True, lists=True)  # lists: CUDA_CORE_ROWS
            operands = (q.quantized, q.outliers, q.columns, q.counts, weight, q.stats, scales, rows.dtype)
            pieces = (q.pieces, q.piece_scales)
            return int8_gemv.eight_bit_gemv(*operands, tiling=tiling, row_invariant=True, pieces=pieces)

        target = with_outliers(torch.randn(1, k, generator=generator), generator, dtype).to(device)[0]
        alone = product(target[None])[0]
        invariant = True
        for size in BATCHES:
            others = with_outliers(torch.randn(max(BATCHES), k, generator=generator), generator, dtype).to(device)
            at = size // 2
            batch = placed(target, others, size, at)
            for tiling in (None, CUDA_CORE_ROWS):
                invariant = invariant and torch.equal(product(batch, tiling)[at], alone)
        # The exact sums in float64: int8 products scaled as bitsandbytes scales them, plus the outliers' term.
        q = int8_quantize.quantize_rows(target[None], 6.0)
        main = (q.quantized.double() @ weight.double().t()) * q.stats.double()[:, None] * scales.double() / 127**2
        extra = q.outliers.double() @ (weight.double() * scales.double()[:, None] / 127).t()
        name = f"int8 row-invariant {n}x{k} {str(dtype).removeprefix('torch.')}"
        results[name] = {"invariant": invariant, "steps": steps(alone, (main + extra)[0])}
    return results


def attention_reference(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, end: int, scale: float
) -> torch.Tensor:
    """Float64 softmax(q·kᵀ·scale)·v for one row over positions 0..end-1: [kv_heads, group, dim]."""
    q, k, v = query.double(), keys[:, :end].double(), values[:, :end].double()
    weights = torch.softmax(torch.einsum("hgd,hld->hgl", q, k) * scale, dim=-1)
    return torch.einsum("hgl,hld->hgd", weights, v)


def attention_in_batch(target: dict[str, torch.Tensor], size: int, at: int, length: int, seed: int) -> torch.Tensor:
    """The target row's attention at row `at` of `size` rows, in a cache of `length` positions. The other rows sit at
    other positions, and past every row's last position the cache holds garbage (as when another request is longer),
    which the mask keeps out."""
    query, keys, values = target["query"], target["keys"], target["values"]
    kv_heads, group, dim = query.shape
    position = keys.shape[1] - 1
    local = torch.Generator().manual_seed(seed)

    def noise(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=local).to(query.dtype).to(query.device)

    cache_k, cache_v = noise(size, kv_heads, length, dim), noise(size, kv_heads, length, dim)
    queries = noise(size, kv_heads, group, dim)
    positions = torch.randint(0, length, (size,), generator=local).to(query.device)
    cache_k[at, :, : position + 1] = keys
    cache_v[at, :, : position + 1] = values
    queries[at] = query
    positions[at] = position
    mask = torch.arange(length, device=query.device)[None, :] <= positions[:, None]
    scale = dim**-0.5
    out = batch_invariant_attention.decode_attention(
        queries, cache_k, cache_v, mask[:, None, None, :], positions, scale
    )
    return out[at]


def attention_cases(device: str) -> dict[str, dict[str, object]]:
    results: dict[str, dict[str, object]] = {}
    for dtype in (torch.bfloat16, torch.float32):
        # At 600 the row has 10 blocks of positions, at 1,100 18: more than the merge sums in one chunk.
        cases = ((2, 2, 40, 150), (1, 4, 16, 63), (2, 1, 32, 0), (1, 2, 16, 600), (1, 2, 16, 1100))
        for kv_heads, group, dim, position in cases:
            generator = torch.Generator().manual_seed(kv_heads * 1000 + group * 100 + dim + position)
            target = {
                "query": torch.randn(kv_heads, group, dim, generator=generator).to(dtype).to(device),
                "keys": torch.randn(kv_heads, position + 1, dim, generator=generator).to(dtype).to(device),
                "values": torch.randn(kv_heads, position + 1, dim, generator=generator).to(dtype).to(device),
            }
            alone = attention_in_batch(target, 1, 0, position + 1, 0)
            invariant = all(
                torch.equal(attention_in_batch(target, size, size // 2, position + 1 + 70 * index, size), alone)
                for index, size in enumerate(BATCHES)
            )
            reference = attention_reference(target["query"], target["keys"], target["values"], position + 1, dim**-0.5)
            name = f"attention {str(dtype).removeprefix('torch.')} kv{kv_heads} group{group} dim{dim} at {position}"
            results[name] = {"invariant": invariant, "steps": steps(alone, reference)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    cases = {**matmul_cases(args.device), **attention_cases(args.device), **four_bit_cases(args.device)}
    cases |= eight_bit_cases(args.device)
    print(json.dumps(cases))


if __name__ == "__main__":
    main()
