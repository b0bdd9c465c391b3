"""The interpreter's version and the installed versions of the packages the worker needs.

Versions come from package metadata, without importing the packages (importing torch takes seconds). The
worker's `ready` frame and `info` (engine/info.py) read them the same way. Runs on old interpreters too (see
__init__.py): an old one must still print its version, so that the SDK can name it.
"""

import sys

from .output import write_report

# The distributions the SDK's version check looks at (src/runtime/python-versions.ts).
WORKER_PACKAGES = ("torch", "transformers", "bitsandbytes", "accelerate", "pillow", "safetensors")


def _metadata():
    try:
        from importlib import metadata
    except ImportError:  # before Python 3.8: every package reads as missing, and the version check names the Python
        return None
    return metadata


def installed_version(distribution):
    """The installed version of a distribution, or None when it is missing or its metadata cannot be read."""
    metadata = _metadata()
    if metadata is None:
        return None
    try:
        return metadata.version(distribution)
    except Exception:  # not installed (PackageNotFoundError), or broken metadata: either way, not usable
        return None


def installed_versions(distributions):
    """{distribution: version or None} for each of `distributions`."""
    found = {}
    for distribution in distributions:
        found[distribution] = installed_version(distribution)
    return found


def python_version():
    """The interpreter's version as "major.minor.micro"."""
    return ".".join(str(part) for part in sys.version_info[:3])


def probe_versions():
    """What the SDK's PythonVersions schema holds: {"python": "3.11.7", "torch": "2.13.0" or None, ...}."""
    found = installed_versions(WORKER_PACKAGES)
    found["python"] = python_version()
    return found


def main():
    write_report(probe_versions())
    return 0


if __name__ == "__main__":
    sys.exit(main())
