"""CUDA C++ compiled at run time by NVRTC, for a kernel Triton cannot express well (`four_bit_gemv.cu`).

CUDA builds of torch bring NVRTC (torch compiles its own jiterator kernels with it). `torch.cuda._compile_kernel`
would do this, but it asks for a CUDA toolkit's include folder (CUDA_HOME), which pip installs of torch do not have,
and the kernels here need no headers: the compile is called directly. Loading and launching use torch's module
loader (`torch.cuda._utils`), whose launches go to the current stream, so CUDA graphs capture them.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch


class NvrtcError(RuntimeError):
    """NVRTC is missing or the source did not compile (the log is the message)."""


@functools.lru_cache(maxsize=1)
def _library() -> ctypes.CDLL:
    # The NVRTC of torch's CUDA version; with a CPU build of torch (the tests, which compile the source but run
    # nothing), whichever pip installed.
    major = (torch.version.cuda or "").split(".")[0]
    names = [f"libnvrtc.so.{major}"] if major else []
    # pip's CUDA wheels put it under site-packages/nvidia/<package>/lib, not on the loader's path.
    for folder in sys.path:
        names += sorted(glob.glob(os.path.join(folder, "nvidia", "*", "lib", f"libnvrtc.so.{major or '*'}")))
    for name in [*names, "libnvrtc.so"]:
        # NVRTC opens its builtins library by name at each compile: one beside it in a pip folder, loaded first,
        # is found that way.
        folder = os.path.dirname(name)
        for builtins in sorted(glob.glob(os.path.join(folder, "libnvrtc-builtins.so.*"))) if folder else []:
            with contextlib.suppress(OSError):
                ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise NvrtcError(f"no NVRTC library{f' for CUDA {major}' if major else ''} (tried {[*names, 'libnvrtc.so']})")


def _check(library: ctypes.CDLL, result: int) -> None:
    if result != 0:
        library.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise NvrtcError(f"NVRTC: {library.nvrtcGetErrorString(result).decode()}")


def compile_cubin(source: str, architecture: str, options: list[str]) -> bytes:
    """The cubin of `source` for `architecture` (e.g. "sm_90")."""
    library = _library()
    program = ctypes.c_void_p()
    _check(library, library.nvrtcCreateProgram(ctypes.byref(program), source.encode(), b"kernel.cu", 0, None, None))
    try:
        flags = [f"--gpu-architecture={architecture}".encode(), *(option.encode() for option in options)]
        result = library.nvrtcCompileProgram(program, len(flags), (ctypes.c_char_p * len(flags))(*flags))
        if result != 0:
            size = ctypes.c_size_t()
            library.nvrtcGetProgramLogSize(program, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            library.nvrtcGetProgramLog(program, log)
            raise NvrtcError(f"the CUDA source did not compile:\n{log.value.decode(errors='replace')}")
        size = ctypes.c_size_t()
        _check(library, library.nvrtcGetCUBINSize(program, ctypes.byref(size)))
        binary = ctypes.create_string_buffer(size.value)
        _check(library, library.nvrtcGetCUBIN(program, binary))
        return binary.raw
    finally:
        library.nvrtcDestroyProgram(ctypes.byref(program))


def _version(library: ctypes.CDLL) -> str:
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(library, library.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)))
    return f"{major.value}.{minor.value}"


def _cache_folder() -> Path:
    # Beside Triton's own kernel cache (TRITON_CACHE_DIR, else ~/.triton/cache): one place to clear.
    triton_cache = os.environ.get("TRITON_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".triton", "cache")
    return Path(triton_cache) / "idefics2-nvrtc"


def cached_cubin(source: str, architecture: str, options: list[str]) -> bytes:
    """`compile_cubin`'s result, kept on disk by source, architecture, options and NVRTC version: a compile takes
    ~1.3 s, which every load would otherwise pay (an unwritable cache only costs the compile)."""
    key = "\n".join([_version(_library()), architecture, *options, source])
    path = _cache_folder() / f"{hashlib.sha256(key.encode()).hexdigest()}.cubin"
    try:
        return path.read_bytes()
    except OSError:
        pass
    cubin = compile_cubin(source, architecture, options)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as temporary:
            temporary.write(cubin)
        os.replace(temporary.name, path)  # whole or absent, for processes loading at the same time
    except OSError:
        pass
    return cubin


def load(cubin: bytes, names: list[str], device: torch.device) -> dict[str, Any]:
    """The named kernels of `cubin`, loaded on `device`; each is called as
    `kernel(grid=(x, y, z), block=(x, y, z), args=[tensors and ints])` and launches on the current stream."""
    from torch.cuda._utils import _cuda_load_module

    with torch.cuda.device(device):
        kernels = _cuda_load_module(cubin, names)
    if not isinstance(kernels, dict):
        raise NvrtcError("torch's module loader returned no kernels")
    return kernels


def architecture(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"
