"""What the doctor finds by importing torch, bitsandbytes and torchvision, in the SDK's DoctorProbe shape.

Nothing here fails: a library that does not import, or a GPU that cannot be queried, becomes an error string
in the report (src/runtime/doctor.ts turns those into problems with fixes). Libraries are imported only after
fd 1 points at stderr, so their prints never reach the JSON. Same syntax rules as the rest of probe/.
"""

import platform
import sys

from .output import claim_stdout, write_report


def short_error(error):
    """`Type: message`, first line only, at most 500 characters."""
    return (type(error).__name__ + ": " + str(error)).strip().splitlines()[0][:500]


def is_installed(name):
    """Whether a top-level package can be found, without importing it."""
    try:
        from importlib.util import find_spec
    except ImportError:  # before Python 3.4
        import pkgutil

        return pkgutil.find_loader(name) is not None
    return find_spec(name) is not None


def device_report(torch, index):
    props = torch.cuda.get_device_properties(index)
    try:
        free = torch.cuda.mem_get_info(index)[0]
    except Exception:  # some drivers and MIG slices cannot say; the total still helps
        free = None
    return {
        "index": index,
        "name": props.name,
        "capability": str(props.major) + "." + str(props.minor),
        "totalMemory": props.total_memory,
        "freeMemory": free,
    }


def cuda_report(torch):
    """Whether torch sees a GPU, and each device with its free memory; a failing query keeps what it found."""
    available = False
    devices = []
    try:
        available = bool(torch.cuda.is_available())
        for index in range(torch.cuda.device_count() if available else 0):
            devices.append(device_report(torch, index))
    except Exception as error:
        return {"available": available, "error": short_error(error), "devices": devices}
    return {"available": available, "error": None, "devices": devices}


def torch_report():
    """(the torch section, the cuda section)."""
    try:
        import torch

        cuda = torch.version.cuda
    except Exception as error:
        no_cuda = {"available": False, "error": None, "devices": []}
        return {"ok": False, "error": short_error(error), "cuda": None}, no_cuda
    return {"ok": True, "error": None, "cuda": cuda}, cuda_report(torch)


def bitsandbytes_section(present, **found):
    """The bitsandbytes section: nothing known but `present`, then what was `found`."""
    section = {
        "present": present,
        "ok": False,
        "error": None,
        "backend": None,
        "library": None,
        "compiledWithCuda": None,
        "libraryError": None,
    }
    section.update(found)
    return section


def bitsandbytes_report():
    """The backend bitsandbytes chose and the native library it loaded.

    bitsandbytes.cextension sets BNB_BACKEND and `lib`: a native library wrapper (its CDLL at `_lib`), or
    ErrorHandlerMockBNBNativeLibrary holding the load error when no native library could be loaded.
    """
    if not is_installed("bitsandbytes"):
        return bitsandbytes_section(False)
    try:
        from bitsandbytes import cextension

        lib = cextension.lib
        native = lib.__dict__.get("_lib")
        return bitsandbytes_section(
            True,
            ok=True,
            backend=getattr(cextension, "BNB_BACKEND", None),
            library=getattr(native, "_name", None),
            compiledWithCuda=bool(getattr(type(lib), "compiled_with_cuda", False)),
            libraryError=lib.__dict__.get("error_msg"),
        )
    except Exception as error:
        return bitsandbytes_section(True, error=short_error(error))


def torchvision_report():
    """Whether torchvision is installed and imports: one built for another torch breaks transformers' processors."""
    if not is_installed("torchvision"):
        return {"present": False, "ok": False, "version": None, "error": None}
    try:
        import torchvision  # pyright: ignore[reportMissingImports]  (optional: usually absent)

        version = torchvision.__version__
    except Exception as error:
        return {"present": True, "ok": False, "version": None, "error": short_error(error)}
    return {"present": True, "ok": True, "version": version, "error": None}


def doctor_report():
    torch_section, cuda_section = torch_report()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "torch": torch_section,
        "cuda": cuda_section,
        "bitsandbytes": bitsandbytes_report(),
        "torchvision": torchvision_report(),
    }


def main():
    out = claim_stdout()
    write_report(doctor_report(), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
