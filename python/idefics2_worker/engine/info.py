"""What the worker runs on: package versions, CUDA devices and bitsandbytes' native library."""

from __future__ import annotations

import platform
from typing import Any

from ..probe.versions import installed_version, installed_versions

READY_PACKAGES = ("torch", "transformers", "bitsandbytes", "accelerate", "pillow")


def versions() -> dict[str, str]:
    """Versions for the `ready` frame, read from package metadata as the SDK's probe does: nothing heavy is imported."""
    found = {"python": platform.python_version(), **installed_versions(READY_PACKAGES)}
    return {name: value for name, value in found.items() if value is not None}


def cuda() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"available": False, "devices": []}
    devices = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        name = torch.cuda.get_device_name(index)
        devices.append(
            {
                "index": index,
                "name": name,
                "totalBytes": int(total),
                "freeBytes": int(free),
                # This process's own use: what a benchmark's peak VRAM is (nvidia-smi adds the CUDA context).
                "allocatedBytes": int(torch.cuda.memory_allocated(index)),
                "peakAllocatedBytes": int(torch.cuda.max_memory_allocated(index)),
            }
        )
    return {"available": True, "devices": devices}


def bitsandbytes() -> dict[str, Any]:
    """The bitsandbytes backend and the native library it loaded, when bitsandbytes imports."""
    version = installed_version("bitsandbytes")
    if version is None:
        return {"version": None, "backend": None}
    try:
        from bitsandbytes import cextension
    except Exception as error:
        return {"version": version, "backend": None, "error": f"{type(error).__name__}: {error}"}
    body: dict[str, Any] = {"version": version, "backend": getattr(cextension, "BNB_BACKEND", None)}
    native = getattr(getattr(cextension, "lib", None), "_lib", None)
    library = getattr(native, "_name", None)
    if isinstance(library, str):
        body["cudaLibrary" if "cuda" in library.rsplit("/", 1)[-1] else "library"] = library
    return body


def info(model_summary: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"versions": versions(), "cuda": cuda(), "bitsandbytes": bitsandbytes()}
    if model_summary is not None:
        body["model"] = model_summary
    return body
