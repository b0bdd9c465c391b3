"""The decode step's 4-bit product as CUDA C++ compiled by NVRTC, for 1-8 rows: on the tensor cores for bfloat16 and
float16 inputs (`four_bit_mma.cu`), on the CUDA cores otherwise (`four_bit_gemv.cu`). Layers the worker packed at load
(`four_bit_packing`) run the tensor-core kernel's packed form at every row count: on an H200 it is faster than both
at 1 to 8 rows (H48: 1.60 ms a token of idefics2-8b's 4-bit linears at one row, 1.82 at eight; the CUDA-core kernel
1.86 and 6.19, the unpacked tensor-core kernel 2.27 and 2.59).

Both compute what `four_bit_gemv` (Triton) computes, bitsandbytes' sums of code · absmax · input, in another order
(the tensor-core kernel with the code values in the input's format), where the Triton kernel is bound by its
per-weight work (the .cu files say why). Their sums are ordered alike at every row count and tiling, so deterministic
decoding uses them too. Where NVRTC, a CUDA GPU of compute capability ≥ 8.0, or a layer's layout does not fit
(`mma_usable`, `usable`), callers keep the Triton kernel.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import nvrtc, programmatic_launch
from .four_bit_packing import PACK_TILES, STEP_WEIGHTS, TILE_OUTPUTS, PackedFourBit, layout_fits
from .triton_support import MAX_ROWS, capable

SOURCES = tuple(
    Path(__file__).with_name(name) for name in ("four_bit_common.cuh", "four_bit_gemv.cu", "four_bit_mma.cu")
)
INPUT_KINDS = {torch.bfloat16: 0, torch.float16: 1, torch.float32: 2}
# The inputs the tensor cores take here (four_bit_mma.cu); float32 keeps the CUDA-core kernel.
MMA_DTYPES = frozenset({torch.bfloat16, torch.float16})
# Weights a lane of the CUDA-core kernel reads at once, a chunk that never straddles a quantisation block.
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

    def macro(self, rows: int) -> str:
        return f"FOUR_BIT_GEMV({rows}, {self.outputs})"

    def runs_on(self, dtype: torch.dtype) -> bool:
        return dtype in INPUT_KINDS


MAX_WARPS = 8  # four_bit_gemv.cu's MAX_WARPS


@dataclass(frozen=True)
class MmaTiling:
    """The tensor-core kernel's: 16-output tiles a block, warps a tile (each taking every splits-th step of 64 weights
    along K), and steps whose loads a warp issues together.

    The sums' order depends on `splits` and `unroll` alone (see four_bit_mma.cu), which `mma_tiling_for` sets by the
    layer's shape; one kernel serves every row count."""

    tiles: int = 2
    splits: int = 8
    unroll: int = 2

    @property
    def warps(self) -> int:
        return self.tiles * self.splits

    def kernel(self, rows: int) -> str:
        del rows
        return f"four_bit_mma_u{self.unroll}"

    def macro(self, rows: int) -> str:
        del rows
        return f"FOUR_BIT_MMA({self.unroll})"

    def runs_on(self, dtype: torch.dtype) -> bool:
        return dtype in MMA_DTYPES


MMA_MAX_WARPS = 16  # four_bit_mma.cu's MMA_MAX_WARPS


@dataclass(frozen=True)
class PackedTiling:
    """The packed-layout tensor-core kernel's: groups of `tiles` 16-output tiles a warp computes together, groups a
    block, warps a group (each taking every splits-th run along K) and steps a run. Its sums are ordered as
    `MmaTiling(_, splits, unroll)`'s."""

    groups: int = 1
    splits: int = 8
    unroll: int = 2
    tiles: int = 2

    @property
    def warps(self) -> int:
        return self.groups * self.splits

    def kernel(self, rows: int) -> str:
        del rows
        return f"four_bit_mma_packed_u{self.unroll}_t{self.tiles}"

    def macro(self, rows: int) -> str:
        del rows
        return f"FOUR_BIT_MMA_PACKED({self.unroll}, {self.tiles})"

    def runs_on(self, dtype: torch.dtype) -> bool:
        return dtype in MMA_DTYPES


def four_bit_mma_packed_cuda(
    x: torch.Tensor,
    layer: PackedFourBit,
    code: torch.Tensor,
    shape: tuple[int, int],
    blocksize: int,
    bias: torch.Tensor | None = None,
    tiling: PackedTiling | None = None,
    compiled: dict[str, Any] | None = None,
) -> torch.Tensor:
    """As `four_bit_mma_cuda`, from `four_bit_packing.pack`'s layout (`layer`, its tiles a multiple of PACK_TILES),
    where `packed_usable` holds."""
    n, k = shape
    table = _compiled_for(x, compiled)
    chosen = tiling or packed_tiling_for(n, k)
    per_block = chosen.tiles * chosen.groups
    if chosen.warps > MMA_MAX_WARPS or PACK_TILES % per_block or layer.tiles % PACK_TILES:
        raise ValueError(
            f"{chosen}, {layer.tiles} tiles: groups times splits at most {MMA_MAX_WARPS}, tiles times groups dividing "
            f"{PACK_TILES}, and a layer packed whole (its tiles a multiple of {PACK_TILES})"
        )
    block_shift = (blocksize // STEP_WEIGHTS).bit_length() - 1

    def launch(rows: int, leading: list[Any]) -> None:
        x_rows, _, _, code32, bias_arg, out, _, _ = leading
        programmatic_launch.launch(
            table[chosen.kernel(rows)],
            grid=(layer.tiles // per_block, 1, 1),
            block=(32 * chosen.warps, 1, 1),
            args=[
                x_rows,
                layer.weights,
                layer.scales,
                code32,
                bias_arg,
                out,
                n,
                k,
                rows,
                block_shift,
                int(bias is not None),
                chosen.splits,
            ],
            # The kernel fills its table from the code before it waits: a code converted by a kernel just now
            # (not float32 on x's device) must be there first.
            programmatic=code32.data_ptr() == code.data_ptr(),
        )

    return _by_launches(x, layer.weights, layer.scales, code, shape, bias, launch)


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


# Inputs this long split K 16 ways: a warp's share of K stays ~900 weights, as at 4,096 inputs in 8 splits.
LONG_INPUTS = 8192


def mma_tiling_for(n: int, k: int) -> MmaTiling:
    """The tensor-core kernel's tiling for a layer shape ([n outputs, k inputs]), by the shape alone (deterministic
    decoding: splits and unroll set the sums' order). The fastest measured at one row (H40, an H200, idefics2-8b's text
    shapes; docs/BENCHMARKS.md), each within 6% of the best at 8 rows: q/k/v and o 8 splits, unroll 4, one tile a
    block; down (14,336 inputs) 16 splits, unroll 2; gate/up (28,672 outputs) 4 splits, unroll 4, two tiles."""
    if n >= WIDE_OUTPUTS:
        return MmaTiling(2, 4, 4)
    if k >= LONG_INPUTS:
        return MmaTiling(1, 16, 2)
    return MmaTiling(1, 8, 4)


def packed_tiling_for(n: int, k: int) -> PackedTiling:
    """The packed kernel's tiling for a layer shape, by the shape alone (one order of sums at every row count). H48 (an
    H200, idefics2-8b's text shapes; docs/BENCHMARKS.md): 16 splits, one tile a warp, for q/k/v, o and down, within 1%
    of each shape's best at 1, 2 and 8 rows; gate/up (28,672 outputs) four groups of two tiles, 4 splits."""
    del k
    if n >= WIDE_OUTPUTS:
        return PackedTiling(4, 4, 1, 2)
    return PackedTiling(1, 16, 1, 1)


# H40 (H200), ms a token of 4-bit linears: at one row the CUDA-core kernel 1.84, the tensor-core kernel 2.25 (its
# best tilings); at 8 rows 6.16 against 2.52; at 2 rows the CUDA cores' 2.18 (H38) against ~2.3.
CUDA_CORE_ROWS = 2


def tensor_cores_for(rows: int, deterministic: bool) -> bool:
    """Whether a product of `rows` rows takes the tensor-core kernel where both kernels run: from 3 rows, and at every
    row count when deterministic (one kernel a layer, so one order of its sums, whatever shares the batch)."""
    return deterministic or rows > CUDA_CORE_ROWS


# Shapes `tiling_for` tells apart: idefics2-8b's text layers ([outputs, inputs] of q/k/v, o, gate/up, down).
_SHAPES = ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336))


# What a kernel is compiled for: rows (the CUDA-core kernel keeps its sums a row in registers) and tiling.
Instance = tuple[int, Tiling | MmaTiling | PackedTiling]


@functools.cache
def chosen_instances() -> frozenset[Instance]:
    """Every (rows, tiling) `tiling_for`, `mma_tiling_for` and `packed_tiling_for` pick at the shapes they tell apart:
    what the worker compiles."""
    gemv = {(rows, tiling_for(n, k, rows)) for rows in range(1, MAX_ROWS + 1) for n, k in _SHAPES}
    mma = {(1, mma_tiling_for(n, k)) for n, k in _SHAPES} | {(1, packed_tiling_for(n, k)) for n, k in _SHAPES}
    return frozenset(gemv | mma)


def source(instances: Iterable[Instance]) -> str:
    """The shared definitions and both kernels' sources, with one extern "C" kernel per distinct macro."""
    lines = sorted({t.macro(rows) for rows, t in instances})
    return "\n".join(path.read_text() for path in SOURCES) + "\n" + "\n".join(lines) + "\n"


def kernel_names(instances: Iterable[Instance], dtype: torch.dtype) -> list[str]:
    """The kernels `source(instances)` defines for inputs of `dtype` (the tensor-core kernel takes no float32)."""
    return sorted({t.kernel(rows) for rows, t in instances if t.runs_on(dtype)})


_lock = threading.Lock()
_failed: dict[tuple[torch.dtype, int], str] = {}


@functools.cache
def _compiled(dtype: torch.dtype, index: int, instances: frozenset[Instance]) -> dict[str, Any]:
    device = torch.device("cuda", index)
    options = [f"-DINPUT_KIND={INPUT_KINDS[dtype]}", "--std=c++17"]
    cubin = nvrtc.cached_cubin(source(instances), nvrtc.architecture(device), options)
    return nvrtc.load(cubin, kernel_names(instances, dtype), device)


def kernels(
    dtype: torch.dtype, device: torch.device, instances: Iterable[Instance] | None = None
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


def compile_in_background(
    device: torch.device, dtypes: Iterable[torch.dtype] = (torch.bfloat16, torch.float16)
) -> threading.Thread:
    """Starts compiling the worker's kernels for inputs of `dtypes` on `device` in a thread of its own and returns it.
    NVRTC releases the GIL, so a 4-bit load that starts this before reading the weights overlaps the compile (3.4 s
    of an H200 host's CPU, H38) with the load; `kernels` then returns what it compiled, or waits for it."""

    def compile_each() -> None:
        for dtype in dtypes:
            kernels(dtype, device)

    thread = threading.Thread(target=compile_each, name="four-bit-kernels", daemon=True)
    thread.start()
    return thread


def _layout_fits(
    x: torch.Tensor, packed: torch.Tensor, absmax: torch.Tensor, shape: tuple[int, int], blocksize: int, step: int
) -> bool:
    """Blocks of whole steps along K, the weights packed and stored as bitsandbytes stores them, aligned for the
    kernels' 16-byte (CUDA cores) and 8-byte (tensor cores) loads."""
    n, k = shape
    return (
        x.is_cuda
        and blocksize % step == 0
        and k % blocksize == 0
        and packed.dtype == torch.uint8
        and packed.is_contiguous()
        and packed.numel() * 2 == n * k
        and packed.data_ptr() % 16 == 0
        and absmax.dtype == torch.float32
        and absmax.is_contiguous()
    )


def usable(x: torch.Tensor, packed: torch.Tensor, absmax: torch.Tensor, shape: tuple[int, int], blocksize: int) -> bool:
    """Whether the CUDA-core kernel can run this layer's product here: its layout, and kernels compiled for x's
    dtype."""
    return _layout_fits(x, packed, absmax, shape, blocksize, CHUNK_WEIGHTS) and kernels(x.dtype, x.device) is not None


def _steps_a_block_fit(blocksize: int) -> bool:
    """Whether a quantisation block is a power of two of the tensor-core kernels' steps: they find a step's block by a
    shift."""
    steps_a_block = blocksize // STEP_WEIGHTS
    return steps_a_block > 0 and steps_a_block & (steps_a_block - 1) == 0


def mma_usable(
    x: torch.Tensor, packed: torch.Tensor, absmax: torch.Tensor, shape: tuple[int, int], blocksize: int
) -> bool:
    """Whether the tensor-core kernel can: bfloat16 or float16 inputs, block sizes of 64 weights times a power of two
    (bitsandbytes' are), and kernels compiled for x's dtype."""
    return (
        x.dtype in MMA_DTYPES
        and _steps_a_block_fit(blocksize)
        and _layout_fits(x, packed, absmax, shape, blocksize, STEP_WEIGHTS)
        and kernels(x.dtype, x.device) is not None
    )


def packed_usable(dtype: torch.dtype, device: torch.device, shape: tuple[int, int], blocksize: int) -> bool:
    """Whether a layer of `shape` with inputs of `dtype` on `device` can be packed and run by the packed kernel: the
    tensor-core kernel's conditions, whole 16-output tiles (a fused group's layers each a run of tiles), and kernels
    compiled for `dtype`."""
    return (
        dtype in MMA_DTYPES
        and device.type == "cuda"
        and _steps_a_block_fit(blocksize)
        and layout_fits(shape, blocksize)
        and shape[0] % TILE_OUTPUTS == 0
        and kernels(dtype, device) is not None
    )


Launch = Callable[[int, list[Any]], None]


def _by_launches(
    x: torch.Tensor,
    packed: torch.Tensor,
    absmax: torch.Tensor,
    code: torch.Tensor,
    shape: tuple[int, int],
    bias: torch.Tensor | None,
    launch: Launch,
) -> torch.Tensor:
    """x [rows, K] → [rows, N] in x's dtype, by launches of at most MAX_ROWS rows: `launch(rows, leading)` starts one,
    `leading` being both kernels' first arguments (x, packed, absmax, code, bias, out, n, k). x is made contiguous and
    16-byte aligned (both kernels read inputs 16 bytes at a time); the code and bias go as float32 (absmax stands in
    for a missing bias: the kernels then do not read it)."""
    n, k = shape
    x = x.contiguous()
    if x.data_ptr() % 16:
        x = x.clone()
    out = torch.empty(x.shape[0], n, dtype=x.dtype, device=x.device)
    code32 = code.to(device=x.device, dtype=torch.float32)
    bias_arg = bias.to(torch.float32).contiguous() if bias is not None else absmax
    for first in range(0, x.shape[0], MAX_ROWS):
        launch(min(MAX_ROWS, x.shape[0] - first), [x[first:], packed, absmax, code32, bias_arg, out[first:], n, k])
    return out


def _compiled_for(x: torch.Tensor, compiled: dict[str, Any] | None) -> dict[str, Any]:
    table = compiled if compiled is not None else kernels(x.dtype, x.device)
    if table is None:
        raise RuntimeError("the 4-bit CUDA kernels are not compiled for this dtype and device; check `usable` first")
    return table


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
    """As `four_bit_gemv.four_bit_gemv` (x [rows, K] → [rows, N] in x's dtype), on the CUDA cores, where `usable`
    holds. `tiling` and `compiled` (from `kernels(..., instances)`): a tiling outside the worker's set, for the tuning
    script."""
    n, k = shape
    table = _compiled_for(x, compiled)

    def launch(rows: int, leading: list[Any]) -> None:
        chosen = tiling or tiling_for(n, k, rows)
        if chosen.warps % chosen.splits or chosen.warps > MAX_WARPS:
            raise ValueError(f"{chosen}: warps must be a multiple of splits and at most {MAX_WARPS}")
        per_block = chosen.outputs * (chosen.warps // chosen.splits)
        table[chosen.kernel(rows)](
            grid=((n + per_block - 1) // per_block, 1, 1),
            block=(32 * chosen.warps, 1, 1),
            args=[*leading, blocksize, int(bias is not None), chosen.splits],
        )

    return _by_launches(x, packed, absmax, code, shape, bias, launch)


def four_bit_mma_cuda(
    x: torch.Tensor,
    packed: torch.Tensor,
    absmax: torch.Tensor,
    code: torch.Tensor,
    shape: tuple[int, int],
    blocksize: int,
    bias: torch.Tensor | None = None,
    tiling: MmaTiling | None = None,
    compiled: dict[str, Any] | None = None,
) -> torch.Tensor:
    """As `four_bit_gemv_cuda`, on the tensor cores, where `mma_usable` holds."""
    n, k = shape
    table = _compiled_for(x, compiled)
    chosen = tiling or mma_tiling_for(n, k)
    if chosen.warps > MMA_MAX_WARPS:
        raise ValueError(f"{chosen}: tiles times splits must be at most {MMA_MAX_WARPS}")
    tiles = (n + TILE_OUTPUTS - 1) // TILE_OUTPUTS
    block_shift = (blocksize // STEP_WEIGHTS).bit_length() - 1

    def launch(rows: int, leading: list[Any]) -> None:
        table[chosen.kernel(rows)](
            grid=((tiles + chosen.tiles - 1) // chosen.tiles, 1, 1),
            block=(32 * chosen.warps, 1, 1),
            args=[*leading, rows, block_shift, int(bias is not None), chosen.splits],
        )

    return _by_launches(x, packed, absmax, code, shape, bias, launch)
