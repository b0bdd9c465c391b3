"""The probes keep to what old Pythons run (see idefics2_worker/probe/__init__.py), and do run on the ones found."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from probe_process import PYTHON_DIR, assert_wire_shape, run_probe

PROBE = PYTHON_DIR / "idefics2_worker" / "probe"
# What `python -m idefics2_worker.probe.<name>` reads on an old interpreter: the package's __init__ and the probes.
SOURCES = [PYTHON_DIR / "idefics2_worker" / "__init__.py", *sorted(PROBE.glob("*.py"))]
# The libraries the doctor examines, imported inside functions that catch every failure.
EXAMINED = {"torch", "bitsandbytes", "torchvision"}
# f-strings, annotations, dict and set comprehensions, set literals, :=, *unpacking, yield from, nonlocal, async.
NEWER_NODES = (ast.JoinedStr, ast.AnnAssign, ast.DictComp, ast.SetComp, ast.Set, ast.NamedExpr, ast.Starred)
NEWER_NODES += (ast.YieldFrom, ast.Nonlocal, ast.AsyncFunctionDef, ast.Await)
OLD_NAMES = ("python2.6", "python2.7", "python3.6", "python3.7", "python3.8", "python3.9")


def _newer_syntax(tree: ast.AST) -> list[str]:
    """Constructs that Python 2.6 cannot parse (or that Python 2 reads differently), by line."""
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if isinstance(node, NEWER_NODES):
            found.append(f"{type(node).__name__} at line {line}")
        elif isinstance(node, ast.FunctionDef | ast.Lambda):
            arguments = node.args
            annotated = any(arg.annotation for arg in [*arguments.args, *arguments.kwonlyargs])
            if arguments.kwonlyargs or arguments.posonlyargs or annotated or getattr(node, "returns", None):
                found.append(f"annotations or keyword-only arguments at line {line}")
        elif isinstance(node, ast.With) and len(node.items) > 1:
            found.append(f"a with statement of several items at line {line}")
        elif isinstance(node, ast.Raise) and node.cause is not None:
            found.append(f"raise ... from at line {line}")
        elif isinstance(node, ast.ImportFrom) and node.module == "__future__":
            found.append(f"a __future__ import at line {line}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            found.append(f"print() at line {line}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.name)
def test_the_probe_files_are_ascii_and_use_no_syntax_newer_than_python_2_6(path: Path) -> None:
    text = path.read_bytes().decode("ascii")
    assert _newer_syntax(ast.parse(text)) == []


@pytest.mark.parametrize("path", sorted(PROBE.glob("*.py")), ids=lambda path: path.name)
def test_the_probes_import_only_the_standard_library_and_the_libraries_they_examine(path: Path) -> None:
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="ascii"))):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    allowed = set(sys.stdlib_module_names) | (EXAMINED if path.name == "doctor.py" else set())
    assert imported - allowed == set()


def _version_of(python: str) -> tuple[int, int] | None:
    code = "import sys; sys.stdout.write('%d %d' % tuple(sys.version_info[:2]))"
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return None
    parts = done.stdout.split()
    return (int(parts[0]), int(parts[1])) if done.returncode == 0 and len(parts) == 2 else None


def _old_pythons() -> list[str]:
    """One interpreter per Python older than 3.10 on this machine: pyenv's versions, then pythonX.Y on PATH."""
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    candidates = sorted(str(path) for path in pyenv.glob("*/bin/python"))
    candidates += [found for name in OLD_NAMES if (found := shutil.which(name))]
    by_version: dict[tuple[int, int], str] = {}
    for python in candidates:
        version = _version_of(python)
        if version is not None and version < (3, 10):
            by_version.setdefault(version, python)
    return [by_version[version] for version in sorted(by_version)]


OLD_PYTHONS = _old_pythons()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("python", OLD_PYTHONS or [None], ids=lambda python: python or "none-found")
def test_an_old_python_answers_both_probes_and_names_its_version(python: str | None) -> None:
    if python is None:
        pytest.skip("no Python older than 3.10 here (pyenv's versions or python2.6-python3.9 on PATH)")
    versions, before = run_probe("versions", python=python)
    assert before.strip() == ""
    assert set(versions) == {"python", "torch", "transformers", "bitsandbytes", "accelerate", "pillow", "safetensors"}
    major, minor = _version_of(python) or (0, 0)
    assert versions["python"].startswith(f"{major}.{minor}.")
    doctor, _ = run_probe("doctor", python=python)
    assert_wire_shape(doctor)
