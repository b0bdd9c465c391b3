"""The one place where exceptions become protocol errors ({code, message, fix, pythonType, traceback})."""

from __future__ import annotations

import contextlib
import re
import sys
import traceback
from typing import Any, Literal

Stage = Literal["load", "generate", "other"]

_MAX_MESSAGE_CHARS = 1000


class WorkerError(Exception):
    """A failure whose protocol code is known where it is raised."""

    def __init__(self, code: str, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fix = fix


def one_line(text: str) -> str:
    """Collapses whitespace so a message is one line, and bounds its length."""
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= _MAX_MESSAGE_CHARS else flat[: _MAX_MESSAGE_CHARS - 1] + "…"


def _python_type(error: BaseException) -> str:
    cls = type(error)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    # Looked up, not imported: the protocol stays free of torch, and a torch error needs torch imported already.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "out of memory" in text.lower() or "DefaultCPUAllocator: can't allocate memory" in text
    )


def _missing_package(error: BaseException) -> str | None:
    if not isinstance(error, ImportError):
        return None
    text = f"{getattr(error, 'name', '') or ''} {error}".lower()
    for package in ("bitsandbytes", "accelerate", "torch", "transformers", "PIL", "safetensors", "llguidance"):
        if package.lower() in text:
            return "pillow" if package == "PIL" else package
    return getattr(error, "name", None) or "a Python package"


def _cuda_unavailable(error: BaseException) -> bool:
    text = str(error)
    return "Torch not compiled with CUDA enabled" in text or "No CUDA GPUs are available" in text


def _bnb_backend_unavailable(error: BaseException) -> bool:
    text = str(error).lower()
    return "bitsandbytes" in text and any(
        phrase in text for phrase in ("backend", "native library", "cuda setup failed", "libbitsandbytes")
    )


def _classify(error: BaseException, stage: Stage) -> tuple[str, str | None]:
    """Returns (code, fix) for an exception that is not a WorkerError."""
    if _is_out_of_memory(error):
        fix = (
            "Free memory or load with a smaller footprint: quantization 4bit, doImageSplitting false, "
            "a smaller longestEdge, fewer images or fewer maxNewTokens."
        )
        return "OUT_OF_MEMORY", fix
    package = _missing_package(error)
    if package is not None:
        return "MISSING_PYTHON_PACKAGE", f"Install {package} in the worker's environment (`idefics2 setup`)."
    if _cuda_unavailable(error):
        return "CUDA_UNAVAILABLE", "Use deviceMap 'cpu', or install a CUDA build of torch and check `nvidia-smi`."
    if _bnb_backend_unavailable(error):
        return (
            "BNB_BACKEND_UNAVAILABLE",
            "Run `idefics2 doctor`; set BNB_CUDA_VERSION to a CUDA version bitsandbytes ships, or load without "
            "quantization.",
        )
    if stage == "load":
        if isinstance(error, OSError) and ".safetensors" in str(error):
            return (
                "MODEL_NOT_FOUND",
                "Weights load from *.safetensors only (pickle-based pytorch_model.bin can run code when loaded): "
                "pick a revision that has safetensors, or convert the checkpoint where you trust it "
                "(from_pretrained, then save_pretrained writes model.safetensors).",
            )
        if isinstance(error, OSError):
            return (
                "MODEL_NOT_FOUND",
                "Check the model id or path (a folder with config.json and *.safetensors); for a hub id, check the "
                "network and any revision, or download it first and pass the folder.",
            )
        return "MODEL_LOAD_FAILED", None
    return "GENERATION_FAILED", None


def to_protocol_error(error: BaseException, stage: Stage = "other") -> dict[str, Any]:
    """Maps any exception to the protocol's error object; the traceback goes in its own field. Never raises."""
    try:
        if isinstance(error, WorkerError):
            code, message, fix = error.code, error.message, error.fix
        else:
            code, fix = _classify(error, stage)
            message = str(error) or type(error).__name__
        body: dict[str, Any] = {"code": code, "message": one_line(message), "pythonType": _python_type(error)}
    except Exception:  # an exception whose str() fails still becomes an answer
        body = {"code": "GENERATION_FAILED", "message": type(error).__name__, "pythonType": _python_type(error)}
        fix = None
    if fix:
        body["fix"] = fix
    if error.__traceback__ is not None:
        with contextlib.suppress(Exception):
            body["traceback"] = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return body


def unsendable_reply(failure: BaseException) -> dict[str, Any]:
    """The error object for a request whose own reply could not be encoded; ASCII only, so it always can be."""
    detail = ascii(str(failure))[1:-1]
    return {
        "code": "GENERATION_FAILED",
        "message": one_line(f"The worker could not encode its reply ({_python_type(failure)}): {detail}"),
        "pythonType": _python_type(failure),
    }
