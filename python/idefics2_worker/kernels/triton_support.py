"""Triton for the worker's kernels: the import guard, where kernels run, and what they share.

CUDA builds of torch bring Triton; CPU builds do not, and then every kernel's caller uses torch and
bitsandbytes ops instead. Tests run the kernels on CPU tensors under Triton's interpreter.
"""

# `start_after_previous` is a @jit function: its tl.constexpr parameter, the orders' constexprs and the grid dependency
# calls (None where Triton lacks them, never reached there: PDL is then never true) are Triton's, not Python's, types.
# pyright: reportInvalidTypeForm=false, reportOptionalCall=false, reportOptionalMemberAccess=false

from __future__ import annotations

import functools
import os
from typing import Any

import torch

try:
    import triton
    import triton.language as tl
except Exception:  # no Triton (CPU torch builds)
    triton = None
    tl = None

# Under Triton's CPU interpreter (the tests) some kernels take another route where the interpreter falls short.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

# Rows per launch of the linear kernels: each row adds accumulators and an unrolled copy of the inner loop, so a
# batch beyond the measured 1-8 (maxBatchSize allows up to 64) runs in launches of at most 8 rows.
MAX_ROWS = 8

_TL_DTYPES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


# The kernels convert to and from bfloat16, which NVIDIA GPUs before Ampere (compute capability 8.0; e.g. the
# T4, V100) lack: there the step keeps torch's and bitsandbytes' kernels. Measured on an H100 (9.0).
MIN_CAPABILITY = (8, 0)


# The `PDL` a kernel launched programmatically takes (`start_after_previous`; 0 for a plain launch): the order of its
# two grid dependency calls. The step's kernels wait first (programmatic_launch.ORDER); the others were measured
# against it (H68, H69).
TRIGGER_FIRST, WAIT_FIRST, TRIGGER_LATE = 1, 2, 3


def available(device: torch.device) -> bool:
    """Whether the worker's Triton kernels run on this device."""
    if triton is None or device.type != "cuda":
        return False
    return capable(device.index)


@functools.lru_cache(maxsize=16)
def capable(index: int | None) -> bool:
    # Asked once per layer and prefill: the device's capability is read from the driver once.
    return tuple(torch.cuda.get_device_capability(index)) >= MIN_CAPABILITY


def tl_dtype(dtype: torch.dtype) -> Any:
    return getattr(tl, _TL_DTYPES[dtype])


if triton is not None:
    try:  # Triton 3.4+: grid dependency control
        from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
    except Exception:
        gdc_launch_dependents = gdc_wait = None

    # The orders as a jit function reads module globals: constexpr.
    _TRIGGER_FIRST, _WAIT_FIRST, _TRIGGER_LATE = (tl.constexpr(o) for o in (TRIGGER_FIRST, WAIT_FIRST, TRIGGER_LATE))

    @triton.jit
    def start_after_previous(PDL: tl.constexpr):
        # A kernel launched with programmatic stream serialization (programmatic_launch.py) waits for the previous one
        # to finish first thing, before any memory access, and lets the next kernel place its blocks before
        # (TRIGGER_FIRST) or after that wait (WAIT_FIRST), or where it calls `let_next_start` (TRIGGER_LATE).
        if PDL == _TRIGGER_FIRST:
            gdc_launch_dependents()
            gdc_wait()
        elif PDL == _WAIT_FIRST:
            gdc_wait()
            gdc_launch_dependents()
        elif PDL == _TRIGGER_LATE:
            gdc_wait()

    @triton.jit
    def let_next_start(PDL: tl.constexpr):
        # TRIGGER_LATE's trigger, after the kernel's main loop (a kernel ending without one triggers as it ends).
        if PDL == _TRIGGER_LATE:
            gdc_launch_dependents()
