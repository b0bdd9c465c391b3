"""The decode step's 4-bit product as CUDA C++ (`four_bit_gemv.cu`, compiled by NVRTC), for 1-8 rows.

It computes what `four_bit_gemv` (Triton) computes, bitsandbytes' float32 sums of code · absmax · input, in another
order, and reads the weights near the card's bandwidth where the Triton kernel is bound by its per-weight work (the
.cu file says why). Its sums are ordered alike at every row count and tiling, so deterministic decoding uses it too.
Where NVRTC, a CUDA GPU of compute capability ≥ 8.0, or a layer's layout does not fit (`usable`), callers keep the
Triton kernel.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import nvrtc
from .triton_support import MAX_ROWS, capable

SOURCE = Path(__file__).with_name("four_bit_gemv.cu")
INPUT_KINDS = {torch.bfloat16: 0, torch.float16: 1, torch.float32: 2}
# Bytes each lane reads at once: a chunk of 32 weights, which never straddles a quantisation block.
CHUNK_WEIGHTS = 32
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tiling:
    """Outputs per group of warps, warps a group (each taking every splits-th pass along K), and warps a block.

    The sums' order depends on `splits` alone (see the .cu file): deterministic decoding needs it to be the same at
    every row count for a layer, so `tiling_for` sets it by the layer's shape only."""

    outputs: int = 4
    splits: int = 1
    warps: int = 2

    def kernel(self, rows: int) -> str:
        return f"four_bit_gemv_r{rows}_o{self.outputs}"


MAX_WARPS = 8  # the .cu file's MAX_WARPS


# Layers this wide keep one warp per group: they have warps enough in flight without splitting K.
WIDE_OUTPUTS = 16384


def splits_for(n: int, k: int) -> int:
    """Warps a group, by the layer's shape alone (H38: two for q/k/v, o and down at every row count but q/k/v's 4 rows,
    where one was 7% faster; one for gate/up)."""
    del k
    return 1 if n >= WIDE_OUTPUTS else 2


def tiling_for(n: int, k: int, rows: int) -> Tiling:
    """The fastest tiling measured for this layer shape ([n outputs, k inputs]) and rows at its `splits_for`
    (H38, an H200, idefics2-8b's text shapes; docs/BENCHMARKS.md): 8 outputs a group up to 4 rows, 4 beyond (their
    sums take the registers), two warps a block."""
    return Tiling(8 if rows <= 4 else 4, splits_for(n, k), 2)


# Shapes `tiling_for` tells apart: idefics2-8b's text layers ([outputs, inputs] of q/k/v, o, gate/up, down).
_SHAPES = ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336))


@functools.cache
def chosen_instances() -> frozenset[tuple[int, Tiling]]:
    """Every (rows, tiling) `tiling_for` picks at the shapes it tells apart: what the worker compiles."""
    return frozenset((rows, tiling_for(n, k, rows)) for rows in range(1, MAX_ROWS + 1) for n, k in _SHAPES)


def source(instances: Iterable[tuple[int, Tiling]]) -> str:
    """four_bit_gemv.cu with one extern "C" kernel per rows and outputs a group."""
    wanted = sorted({(rows, t.outputs) for rows, t in instances})
    lines = [f"FOUR_BIT_GEMV({rows}, {outputs})" for rows, outputs in wanted]
    return SOURCE.read_text() + "\n" + "\n".join(lines) + "\n"


_lock = threading.Lock()
_failed: dict[tuple[torch.dtype, int], str] = {}


@functools.cache
def _compiled(dtype: torch.dtype, index: int, instances: frozenset[tuple[int, Tiling]]) -> dict[str, Any]:
    device = torch.device("cuda", index)
    options = [f"-DINPUT_KIND={INPUT_KINDS[dtype]}", "--std=c++17"]
    cubin = nvrtc.cached_cubin(source(instances), nvrtc.architecture(device), options)
    return nvrtc.load(cubin, sorted({t.kernel(rows) for rows, t in instances}), device)


def kernels(
    dtype: torch.dtype, device: torch.device, instances: Iterable[tuple[int, Tiling]] | None = None
) -> dict[str, Any] | None:
    """The compiled kernels for inputs of `dtype` on `device` (the worker's set, or `instances`), compiled once;
    None where they cannot be (the reason is logged once)."""
    if device.type != "cuda" or dtype not in INPUT_KINDS or torch.version.cuda is None:
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    if (dtype, index) in _failed or not capable(index):
        return None
    wanted = chosen_instances() if instances is None else frozenset(instances)
    with _lock:
        try:
            return _compiled(dtype, index, wanted)
        except Exception as error:  # NVRTC missing or too old for this card, or torch's loader changed
            _failed[(dtype, index)] = f"{type(error).__name__}: {error}"
            _log.warning("4-bit CUDA kernel unavailable (the Triton kernel runs instead): %s", _failed[(dtype, index)])
            return None


def usable(x: torch.Tensor, packed: torch.Tensor, absmax: torch.Tensor, shape: tuple[int, int], blocksize: int) -> bool:
    """Whether this layer's product can run here: a layout the kernel reads with 16-byte loads, and kernels compiled
    for x's dtype."""
    n, k = shape
    return (
        x.is_cuda
        and blocksize % CHUNK_WEIGHTS == 0
        and k % blocksize == 0
        and packed.dtype == torch.uint8
        and packed.is_contiguous()
        and packed.numel() * 2 == n * k
        and packed.data_ptr() % 16 == 0
        and absmax.dtype == torch.float32
        and absmax.is_contiguous()
        and kernels(x.dtype, x.device) is not None
    )


def four_bit_gemv_cuda(
    x: torch.Tensor,
    packed: torch.Tensor,
    absmax: torch.Tensor,
    code: torch.Tensor,
    shape: tuple[int, int],
    blocksize: int,
    bias: torch.Tensor | None = None,
    tiling: Tiling | None = None,
    compiled: dict[str, Any] | None = None,
) -> torch.Tensor:
    """As `four_bit_gemv.four_bit_gemv` (x [rows, K] → [rows, N] in x's dtype), where `usable` holds. `tiling` and
    `compiled` (from `kernels(..., instances)`): a tiling outside the worker's set, for the tuning script."""
    n, k = shape
    table = compiled if compiled is not None else kernels(x.dtype, x.device)
    if table is None:
        raise RuntimeError("the 4-bit CUDA kernel is not compiled for this dtype and device; check `usable` first")
    x = x.contiguous()
    if x.data_ptr() % 16:  # the kernel reads inputs 16 bytes at a time
        x = x.clone()
    out = torch.empty(x.shape[0], n, dtype=x.dtype, device=x.device)
    code32 = code.to(device=x.device, dtype=torch.float32)
    has_bias = bias is not None
    bias_arg = bias.to(torch.float32).contiguous() if bias is not None else absmax
    for first in range(0, x.shape[0], MAX_ROWS):
        rows = min(MAX_ROWS, x.shape[0] - first)
        chosen = tiling or tiling_for(n, k, rows)
        if chosen.warps % chosen.splits or chosen.warps > MAX_WARPS:
            raise ValueError(f"{chosen}: warps must be a multiple of splits and at most {MAX_WARPS}")
        per_block = chosen.outputs * (chosen.warps // chosen.splits)
        table[chosen.kernel(rows)](
            grid=((n + per_block - 1) // per_block, 1, 1),
            block=(32 * chosen.warps, 1, 1),
            args=[
                x[first:],
                packed,
                absmax,
                code32,
                bias_arg,
                out[first:],
                n,
                k,
                blocksize,
                int(has_bias),
                chosen.splits,
            ],
        )
    return out
