"""Hopper's programmatic dependent launch for the decode step's kernels.

A decode step at batch 1 is ~330 short kernels in a CUDA graph, each waiting for the one before it to finish, flush
and hand over before its blocks are even placed. Launched with programmatic stream serialization (compute
capability 9.0 and up), a kernel's blocks are placed as soon as the kernel before it lets them
(`griddepcontrol.launch_dependents`), run what needs nothing from it (the 4-bit kernel fills its code table), then
wait for it to finish (`griddepcontrol.wait`) before reading its output. CUDA graphs keep these edges when they
capture the launches.

The step's Triton kernels let the next one place its blocks once they have waited (`ORDER`, WAIT_FIRST), not before:
a kernel that lets the next one in before its own wait lets a chain of waiting kernels in, each placed on the SMs
while the running kernel still reads its weights. Waiting first, the captured step took 2.042 ms at one row against
2.175 at 4-bit, and 4.161 against 5.527 at bf16 with the projections on the Triton matmul (H69,
scripts/gpu/compare_step_linears.py); the 4-bit kernel still lets the next one in first, so that one kernel at most is
placed ahead.

Every kernel launched so must wait before it touches memory another kernel wrote or reads, and must not end before
waiting: then a kernel that waited has every earlier kernel finished behind it, whichever of them were launched so.
The one exception is the weights, which nothing writes while the step runs: the linears' kernels (`int8_gemv`,
`batch_invariant_matmul`) start reading their first block of them before they wait (`WEIGHTS_FIRST`), so that the
block arrives while the kernel before them finishes rather than after (H76: the captured step 2.925 → 2.796 ms at
8-bit, 4.236 → 4.171 at bf16, one row).
The step's Triton kernels (`step_kernels`, `batch_invariant_attention`, `batch_invariant_matmul`, and at 8-bit
`int8_quantize` and `int8_gemv`: the captured 8-bit step 3.18 → 2.93 ms at one row, H73) take `PDL` and Triton's
`launch_pdl`; its NVRTC kernels launch through `launch`, torch's module loader having no launch attributes.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from . import triton_support

# Whether the step's kernels launch so where they can, and the order of their Triton kernels' grid dependency calls
# (`triton_support.start_after_previous`): switches for measuring the difference.
ENABLED = True
ORDER = triton_support.WAIT_FIRST
# Whether the linears' kernels read their first block of weights before the wait (the module docstring): the kernels'
# `WEIGHTS_FIRST`, the same bits either way.
WEIGHTS_FIRST = True
MIN_CAPABILITY = (9, 0)
_PROGRAMMATIC_STREAM_SERIALIZATION = 6  # CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
_active = threading.local()  # depth of `decode_graph` on this thread


def _triton_has_it() -> bool:
    """Whether Triton has the wait and the trigger (`triton_support.start_after_previous`) and `launch_pdl`."""
    if getattr(triton_support, "gdc_wait", None) is None:  # no Triton, or one from before grid dependency control
        return False
    from triton.backends.nvidia.compiler import CUDAOptions

    return "launch_pdl" in CUDAOptions.__dataclass_fields__


@functools.lru_cache(maxsize=16)
def _capable(index: int) -> bool:
    return tuple(torch.cuda.get_device_capability(index)) >= MIN_CAPABILITY and _triton_has_it()


@contextmanager
def decode_graph() -> Iterator[None]:
    """Inside (on this thread), kernels launch programmatically where they can: the decode graphs' warm-up and capture
    (`DecodeGraphs`), where it was measured (H56: the captured 4-bit step 2.42 → 2.29 ms at one row). The warm-up
    compiles the kernels' programmatic forms before the capture; the prefill and eager steps keep plain launches."""
    depth = getattr(_active, "depth", 0)
    _active.depth = depth + 1
    try:
        yield
    finally:
        _active.depth = depth


def supported(device: torch.device) -> bool:
    """Whether kernels on `device` can launch with programmatic stream serialization (compute capability 9.0+, a CUDA
    build of torch, a Triton with grid dependency control), as they do inside `decode_graph` where `ENABLED`."""
    if device.type != "cuda" or torch.version.cuda is None:
        return False
    return _capable(device.index if device.index is not None else torch.cuda.current_device())


def enabled(device: torch.device) -> bool:
    """Whether kernels on `device` launch with programmatic stream serialization now (inside `decode_graph`)."""
    return ENABLED and bool(getattr(_active, "depth", 0)) and supported(device)


def triton_options(device: torch.device) -> dict[str, bool | int]:
    """A step Triton kernel's launch options: its `PDL` (`ORDER` where `enabled`, else False; it calls
    `triton_support.start_after_previous(PDL)` first) and, where `enabled`, Triton's `launch_pdl`."""
    if enabled(device):
        return {"PDL": ORDER, "launch_pdl": True}
    return {"PDL": False}


class _Attribute(ctypes.Structure):
    # CUlaunchAttribute: an id, padding to 8 bytes, a 64-byte value union.
    _fields_ = [
        ("id", ctypes.c_uint),
        ("pad", ctypes.c_char * 4),
        ("value", ctypes.c_int),
        ("rest", ctypes.c_char * 60),
    ]


class _Config(ctypes.Structure):
    # CUlaunchConfig.
    _fields_ = [
        ("grid_x", ctypes.c_uint),
        ("grid_y", ctypes.c_uint),
        ("grid_z", ctypes.c_uint),
        ("block_x", ctypes.c_uint),
        ("block_y", ctypes.c_uint),
        ("block_z", ctypes.c_uint),
        ("shared_bytes", ctypes.c_uint),
        ("stream", ctypes.c_void_p),
        ("attributes", ctypes.POINTER(_Attribute)),
        ("attribute_count", ctypes.c_uint),
    ]


def _argument(value: Any) -> ctypes._SimpleCData:
    if isinstance(value, torch.Tensor):
        return ctypes.c_void_p(value.data_ptr())
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"a kernel argument must be a CUDA tensor or an int, not {type(value).__name__}")
    return ctypes.c_int(value)


def launch(
    kernel: Any, grid: tuple[int, int, int], block: tuple[int, int, int], args: list[Any], *, programmatic: bool = True
) -> None:
    """Launches an NVRTC kernel loaded by `nvrtc.load` on the current stream with programmatic stream serialization
    where `programmatic` and `enabled` (the kernel must wait before reading what earlier kernels wrote), else as
    torch's loader does."""
    stream = torch.cuda.current_stream()
    if not (programmatic and enabled(stream.device)):
        kernel(grid=grid, block=block, args=args)
        return
    from torch.cuda._utils import _check_cuda, _get_gpu_runtime_library

    values = [_argument(arg) for arg in args]
    pointers = (ctypes.c_void_p * len(values))(*(ctypes.cast(ctypes.byref(v), ctypes.c_void_p) for v in values))
    attribute = _Attribute(id=_PROGRAMMATIC_STREAM_SERIALIZATION, value=1)
    config = _Config(*grid, *block, 0, ctypes.c_void_p(stream.cuda_stream), ctypes.pointer(attribute), 1)
    library = _get_gpu_runtime_library()
    _check_cuda(library.cuLaunchKernelEx(ctypes.byref(config), kernel.func, pointers, None))
