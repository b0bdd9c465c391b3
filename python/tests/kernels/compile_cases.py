"""Every Triton kernel the worker launches, compiled for a GPU it supports, on a machine without one.

The other kernel tests run in Triton's interpreter, which accepts programs that the compiler rejects: on 2026-12-01 a
loop variable that changed shape passed every interpreter test and failed on the H200 (docs/BENCHMARKS.md, change 26).
Here a stand-in for the CUDA driver names the target (`--capability 80`: Ampere, the oldest the kernels support; 90:
Hopper), each launch compiles its kernel to a cubin with Triton's own compiler and ptxas, and nothing runs.

The launches are those of kernel_cases.py and batch_invariant_cases.py (every kernel, small shapes; their results are
not looked at) and the decode step's at idefics2-8b's shapes, whose tilings were tuned on the H200. Prints one JSON
line: the kernels compiled ("module.name"), those the package has, the launches compiled, and the groups that failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# idefics2-8b's decode shapes: (outputs, inputs) of the fused q/k/v, o, fused gate/up, down; lm_head; the text model.
LINEAR_SHAPES = ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336))
LM_HEAD = (32003, 4096)
HIDDEN, HEADS, KV_HEADS, HEAD_DIM, INTERMEDIATE, CACHE = 4096, 32, 8, 128, 14336, 1024
ROWS = (1, 2, 8, 20)


class CompileOnlyDriver:
    """Stands in for Triton's CUDA driver: the target to compile for; launches compile and return."""

    def __init__(self, capability: int) -> None:
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", capability, 32)

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_current_target(self) -> Any:
        return self.target

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")

    def is_active(self) -> bool:
        return True


def compile_only(capability: int) -> tuple[set[str], list[int]]:
    """Route every @triton.jit launch to a compilation for `capability` (Triton caches each specialisation); returns
    the kernels compiled and a one-item count of launches, both filled as launches happen."""
    from triton.runtime import driver, jit

    driver.set_active(CompileOnlyDriver(capability))
    compiled: set[str] = set()
    count = [0]
    run = jit.JITFunction.run

    def compile_instead(self: Any, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> Any:
        kernel = run(self, *args, grid=grid, warmup=True, **kwargs)
        if kernel is None or "cubin" not in kernel.asm:
            raise RuntimeError(f"{self.fn.__module__}.{self.fn.__name__} gave no cubin")
        compiled.add(f"{self.fn.__module__}.{self.fn.__name__}")
        count[0] += 1
        return kernel

    jit.JITFunction.run = compile_instead  # type: ignore[method-assign]
    return compiled, count


def launched_kernels() -> set[str]:
    """The package's kernels that the host launches: @triton.jit functions named *_kernel (helpers are inlined)."""
    import importlib
    import pkgutil

    from triton.runtime.jit import JITFunction

    import idefics2_worker.kernels as package

    names = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name, value in vars(module).items():
            if isinstance(value, JITFunction) and name.endswith("_kernel"):
                names.add(f"{module.__name__}.{name}")
    return names


def decode_shapes() -> None:
    """The decode step's launches at idefics2-8b's shapes and the row counts the worker uses (the weights' values do
    not matter to a compiler: they are left uninitialised)."""
    from idefics2_worker.kernels import (
        batch_invariant_matmul,
        four_bit_dequantize,
        four_bit_gemv,
        four_bit_packing,
        int8_dequantize,
        int8_gemv,
        int8_quantize,
    )

    bf16 = torch.bfloat16
    code = torch.empty(16)
    for outputs, inputs in LINEAR_SHAPES:
        packed = torch.empty(outputs * inputs // 2, dtype=torch.uint8)
        absmax = torch.empty(outputs * inputs // 64)
        quantized = torch.empty(outputs, inputs, dtype=torch.int8)
        scales = torch.empty(outputs)
        for rows in ROWS:
            x = torch.empty(rows, inputs, dtype=bf16)
            # The several-row form that keeps each row's sums per lane (tuned, not the default).
            for tiling in (None, four_bit_gemv.INVARIANT_TILING, four_bit_gemv.Tiling(4, 2, 4, defer=True)):
                four_bit_gemv.four_bit_gemv(x, packed, absmax, code, (outputs, inputs), 64, tiling=tiling)
            int8_quantize.quantize_rows(x, 6.0)  # what a row count writes by default
            q = int8_quantize.quantize_rows(x, 6.0, row_invariant=True, lists=True)
            operands = (q.quantized, q.outliers, q.columns, q.counts, quantized, q.stats, scales, bf16)
            pieces = (q.pieces, q.piece_scales)
            for invariant in (False, True):
                int8_gemv.eight_bit_gemv(*operands, row_invariant=invariant, pieces=pieces)
            # The MMA with the outliers as int8 pieces, whole and with K split, at every row count.
            for splits in (1, 4):
                tiling = int8_gemv.Tiling(128, 128, mma=True, pieces=True, splits=splits)
                int8_gemv.eight_bit_gemv(*operands, tiling=tiling, pieces=pieces)
            # The CUDA-core kernel's tiling at three or four rows, at the other row counts too.
            int8_gemv.eight_bit_gemv(*operands, tiling=int8_gemv.tiling_for(outputs, inputs, 4))
            batch_invariant_matmul.linear(x, torch.empty(outputs, inputs, dtype=bf16))
        state = SimpleNamespace(shape=(outputs, inputs), absmax=absmax, code=code, blocksize=64)
        # The fast decoder's packed layout (four_bit_packing), which the prefill reads as it lies.
        layer = four_bit_packing.PackedFourBit(packed, absmax, outputs // four_bit_packing.TILE_OUTPUTS)
        for dtype in (torch.float32, torch.float16, bf16):
            four_bit_dequantize.four_bit_dequantize(packed, state, dtype)
            four_bit_dequantize.four_bit_dequantize(packed, state, dtype, layer)
            int8_dequantize.int8_dequantize(quantized, scales, dtype)
    for rows in ROWS:
        batch_invariant_matmul.linear(torch.empty(rows, LM_HEAD[1], dtype=bf16), torch.empty(*LM_HEAD, dtype=bf16))
    step_launches()


def step_launches() -> None:
    """The decode step's norm, rotary, SiLU, attention kernels, its bf16 projections and lm_head at idefics2-8b's
    shapes."""
    from idefics2_worker.kernels import batch_invariant_attention, batch_invariant_matmul, step_kernels

    bf16 = torch.bfloat16
    for rows in ROWS:
        hidden = torch.empty(rows, 1, HIDDEN, dtype=bf16)
        step_kernels.add_rms_norm(hidden, torch.empty_like(hidden), torch.empty(HIDDEN, dtype=bf16), 1e-5)
        for delta in (None, torch.empty_like(hidden)):
            step_kernels.add_rms_norm_quantized(hidden, delta, torch.empty(HIDDEN, dtype=bf16), 1e-5, 6.0)
        eight_bit_launches(rows)
        gate_up = torch.empty(rows, 1, 2 * INTERMEDIATE, dtype=bf16)
        step_kernels.silu_mul(*gate_up.split(INTERMEDIATE, dim=-1))
        qkv = torch.empty(rows, 1, (HEADS + 2 * KV_HEADS) * HEAD_DIM, dtype=bf16)
        query, key, value = qkv.split([HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM], dim=-1)
        keys = torch.empty(rows, KV_HEADS, CACHE, HEAD_DIM, dtype=bf16)
        values = torch.empty_like(keys)
        cos = sin = torch.empty(rows, 1, HEAD_DIM, dtype=bf16)
        positions = torch.zeros(rows, dtype=torch.long)
        step_kernels.rotary_into_cache(query, key, value, cos, sin, keys, values, positions)
        queries = torch.empty(rows, KV_HEADS, HEADS // KV_HEADS, HEAD_DIM, dtype=bf16)
        mask = torch.ones(rows, 1, 1, CACHE, dtype=torch.bool)
        batch_invariant_attention.decode_attention(queries, keys, values, mask, positions, HEAD_DIM**-0.5)
        # o's product left split, its sums added by the add + norm after it.
        o_weight = torch.empty(HIDDEN, HEADS * HEAD_DIM, dtype=bf16)
        sums = batch_invariant_matmul.split_linear(torch.empty(rows, 1, HEADS * HEAD_DIM, dtype=bf16), o_weight)
        step_kernels.add_rms_norm(hidden, sums, torch.empty(HIDDEN, dtype=bf16), 1e-5)
        head = torch.empty(*LM_HEAD, dtype=bf16)
        batch_invariant_matmul.linear(hidden[:, 0], head, tiling=batch_invariant_matmul.HEAD_TILING)
        for outputs, inputs in LINEAR_SHAPES:  # split along K or not: the sum of the splits launches too
            weight = torch.empty(outputs, inputs, dtype=bf16)
            batch_invariant_matmul.linear(torch.empty(rows, inputs, dtype=bf16), weight)


def prefill_launches() -> None:
    """The prefill's rotary embedding at idefics2-8b's shapes: a batch of prompts' column slices of one q/k/v
    product, cos and sin shared by the batch."""
    from idefics2_worker.kernels import step_kernels

    for batch, length in ((1, 859), (8, 20)):
        qkv = torch.empty(batch, length, (HEADS + 2 * KV_HEADS) * HEAD_DIM, dtype=torch.bfloat16)
        query = qkv[..., : HEADS * HEAD_DIM].view(batch, length, HEADS, HEAD_DIM).transpose(1, 2)
        key = qkv[..., HEADS * HEAD_DIM : (HEADS + KV_HEADS) * HEAD_DIM]
        key = key.view(batch, length, KV_HEADS, HEAD_DIM).transpose(1, 2)
        cos = torch.empty(1, length, HEAD_DIM, dtype=torch.bfloat16)
        step_kernels.prefill_rotary(query, key, cos, cos)


def eight_bit_launches(rows: int) -> None:
    """The 8-bit step's products at idefics2-8b's shapes: the input's quantisation, the kernel its rows take and the
    row-invariant form (pieces, whole and split)."""
    from idefics2_worker.kernels import int8_gemv, int8_quantize

    bf16 = torch.bfloat16
    for outputs, inputs in LINEAR_SHAPES:
        weight, scales = torch.empty(outputs, inputs, dtype=torch.int8), torch.empty(outputs)
        x = torch.empty(rows, inputs, dtype=bf16)
        q = int8_quantize.quantize_rows(x, 6.0, row_invariant=True, lists=True)
        operands = (q.quantized, q.outliers, q.columns, q.counts, weight, q.stats, scales, bf16)
        int8_gemv.eight_bit_gemv(*operands, pieces=(q.pieces, q.piece_scales))
        int8_gemv.eight_bit_gemv(*operands, row_invariant=True, pieces=(q.pieces, q.piece_scales))


def programmatic_step_launches() -> None:
    """`step_launches` as Hopper runs them: launched with programmatic stream serialization, each kernel waiting for
    the previous one first (programmatic_launch.py)."""
    from idefics2_worker.kernels import programmatic_launch

    triton_options = programmatic_launch.triton_options
    programmatic_launch.triton_options = lambda device: {"PDL": programmatic_launch.ORDER, "launch_pdl": True}
    try:
        step_launches()
    finally:
        programmatic_launch.triton_options = triton_options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--capability", type=int, default=90, help="compute capability x 10: 80 Ampere, 90 Hopper")
    args = parser.parse_args()
    compiled, count = compile_only(args.capability)
    import batch_invariant_cases
    import kernel_cases

    failures: dict[str, str] = {}
    groups = {
        "kernel_cases": lambda: [
            kernel_cases.four_bit_cases("cpu"),
            kernel_cases.eight_bit_cases("cpu"),
            kernel_cases.step_cases("cpu"),
            kernel_cases.int8_dequantize_cases("cpu"),
            kernel_cases.four_bit_dequantize_cases("cpu"),
            kernel_cases.saturating_cast_cases("cpu"),
            kernel_cases.norm_quantize_cases("cpu"),
        ],
        "batch_invariant_cases": lambda: [
            batch_invariant_cases.matmul_cases("cpu"),
            batch_invariant_cases.attention_cases("cpu"),
            batch_invariant_cases.four_bit_cases("cpu"),
        ],
        "decode shapes": decode_shapes,
        "prefill shapes": prefill_launches,
    }
    if args.capability >= 90:
        groups["decode step, programmatic launch"] = programmatic_step_launches
    for name, launches in groups.items():
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the cases' own prints; stdout is this script's JSON
                launches()
        except Exception as error:  # a compiler error: reported with the group it came from
            failures[name] = f"{type(error).__name__}: {str(error)[-1500:]}"
    print(
        json.dumps(
            {
                "capability": args.capability,
                "compiled": sorted(compiled),
                "expected": sorted(launched_kernels()),
                "launches": count[0],
                "failures": failures,
            }
        )
    )


if __name__ == "__main__":
    main()
