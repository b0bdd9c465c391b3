"""The interpreter's version and the installed versions of the packages the worker needs, checked installed.

Versions come from package metadata, without importing the packages (importing torch takes seconds). The
worker's `ready` frame and `info` (engine/info.py) read them the same way. Runs on old interpreters too (see
__init__.py): an old one must still print its version, so that the SDK can name it.

Metadata alone can lie: a package whose folder was deleted keeps its dist-info. So a worker package counts as
installed only when its module can be found too, and every package it needs (its unconditional requirements, and
theirs) must have metadata. With `--files`, every file their RECORDs list must exist as well (a second or so for
torch's 20,000 files): what `idefics2 setup` and `idefics2 doctor` check. What is wrong is listed under `damaged`.
"""

import os
import re
import sys

from .output import write_report

# The distributions the SDK's version check looks at (src/runtime/python-versions.ts).
WORKER_PACKAGES = ("torch", "transformers", "bitsandbytes", "accelerate", "pillow", "safetensors")
# The module each of them is imported as.
IMPORT_NAMES = {
    "torch": "torch",
    "transformers": "transformers",
    "bitsandbytes": "bitsandbytes",
    "accelerate": "accelerate",
    "pillow": "PIL",
    "safetensors": "safetensors",
}
_REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# From here on the packages' modules, requirements and files are checked, not only their versions.
OLDEST_CHECKED_PYTHON = (3, 10)
# The packages whose imports take the worker's start (seconds each): whether they were compiled to bytecode.
COMPILED_CHECKED = ("torch", "transformers")


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


def module_found(name):
    """Whether a top-level module can be found, without importing it."""
    try:
        from importlib.util import find_spec
    except ImportError:  # before Python 3.4
        import pkgutil

        return pkgutil.find_loader(name) is not None
    try:
        return find_spec(name) is not None
    except Exception:  # a broken finder or package: not usable
        return False


def _distribution(name):
    metadata = _metadata()
    if metadata is None:
        return None
    try:
        return metadata.distribution(name)
    except Exception:  # not installed, or unreadable metadata
        return None


def _normalized(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def required_names(distribution):
    """The distributions `distribution` always needs: its requirements without a marker (extras, platforms)."""
    names = []
    for requirement in distribution.requires or []:
        if ";" in requirement:
            continue
        match = _REQUIREMENT_NAME.match(requirement.strip())
        if match:
            names.append(_normalized(match.group(0)))
    return names


def missing_file(distribution):
    """The first file the distribution's RECORD lists that is gone, or None; byte code and files outside the
    distribution's own folder (scripts) are left out, and without a RECORD nothing can be said."""
    for path in distribution.files or []:
        text = str(path).replace("\\", "/")
        if text.startswith("../") or "__pycache__/" in text or text.endswith(".pyc"):
            continue
        if not os.path.exists(str(distribution.locate_file(path))):
            return text
    return None


def _damage(name, version, problem, required_by=None):
    return {"name": name, "version": version, "problem": problem, "requiredBy": required_by}


def _worker_package_damage(name, distribution, check_files):
    module = IMPORT_NAMES[name]
    if not module_found(module):
        return "its module " + module + " cannot be found"
    missing = missing_file(distribution) if check_files else None
    if missing is not None:
        return "its file " + missing + " is missing"
    return None


def _requirement_damage(check_files):
    """What is wrong with the packages the installed worker packages need, walking their requirements."""
    damaged = []
    seen = list(WORKER_PACKAGES)
    pending = []
    for name in WORKER_PACKAGES:
        distribution = _distribution(name)
        if distribution is not None:
            pending.extend([(required, name) for required in required_names(distribution)])
    while pending:
        name, needed_by = pending.pop(0)
        if name in seen:
            continue
        seen.append(name)
        distribution = _distribution(name)
        if distribution is None:
            damaged.append(_damage(name, None, "not installed, but " + needed_by + " requires it", needed_by))
            continue
        missing = missing_file(distribution) if check_files else None
        if missing is not None:
            damaged.append(_damage(name, distribution.version, "its file " + missing + " is missing", needed_by))
        pending.extend([(required, name) for required in required_names(distribution)])
    return damaged


def compiled(modules=COMPILED_CHECKED):
    """Whether each of `modules` (top-level packages) has its `__init__` compiled to bytecode beside its source, as
    pip leaves it. An interpreter where it is not (installed without compiling, in a read-only folder, where
    PYTHONDONTWRITEBYTECODE is set) compiles those packages anew on every start: the SDK then keeps their bytecode
    in its own folder (src/runtime/worker-bytecode.ts). Missing modules count as compiled: nothing to save."""
    try:
        from importlib.util import cache_from_source, find_spec
    except ImportError:  # before Python 3.4
        return True
    for name in modules:
        try:
            spec = find_spec(name)
        except Exception:  # a broken finder or package: the version check names it
            continue
        origin = spec.origin if spec is not None else None
        if not origin or not origin.endswith(".py"):
            continue
        if not os.path.exists(cache_from_source(origin)):
            return False
    return True


def probe_versions(check_files=False):
    """What the SDK's PythonVersions schema holds: {"python": "3.11.7", "torch": "2.13.0" or None, ...},
    `damaged` when something installed is not usable (a damaged worker package's version is then None), and
    `compiled` (`compiled()`)."""
    found = installed_versions(WORKER_PACKAGES)
    found["python"] = python_version()
    # importlib.metadata finds every distribution by its normalized name from 3.10, the oldest Python the worker runs
    # on; an older one is refused for its version anyway.
    if tuple(sys.version_info[:2]) < OLDEST_CHECKED_PYTHON:
        return found
    damaged = []
    for name in WORKER_PACKAGES:
        distribution = _distribution(name) if found[name] is not None else None
        problem = _worker_package_damage(name, distribution, check_files) if distribution is not None else None
        if problem is not None:
            damaged.append(_damage(name, found[name], problem))
            found[name] = None
    damaged.extend(_requirement_damage(check_files))
    if damaged:
        found["damaged"] = damaged
    found["compiled"] = compiled()
    return found


def main():
    write_report(probe_versions(check_files="--files" in sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
