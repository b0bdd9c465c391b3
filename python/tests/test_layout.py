"""The worker package's house rules: imports run one way between its folders, and the wire stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "idefics2_worker"

# What each folder may import from the package (besides itself): server → protocol; engine → decode → kernels;
# probe (standard library only, run before the worker) and bytecode (standard library only, also run after it)
# import nothing of the package.
ALLOWED = {
    "probe": set(),
    "bytecode": set(),
    "protocol": set(),
    "server": {"protocol", "bytecode"},
    "request": {"protocol"},
    "kernels": set(),
    "decode": {"protocol", "request", "kernels"},
    "engine": {"protocol", "request", "decode", "probe"},
}
# The kernels may lean on the standard library; of third-party code, only torch and triton.
ALLOWED_FOR_KERNELS = set(sys.stdlib_module_names) | {"__future__", "torch", "triton"}


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module, level) of every import in a file, relative ones resolved inside the package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level]
                module = ".".join([*base, node.module] if node.module else base)
                names = [f"{module}.{alias.name}" for alias in node.names] if not node.module else [module]
                found += [(name, node.level) for name in names]
            else:
                found.append((node.module or "", 0))
    return found


def _folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "idefics2_worker" and len(parts) > 1 else None


def _sources(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).glob("*.py"))


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_each_folder_imports_only_the_folders_below_it(folder: str) -> None:
    if not (PACKAGE / folder).is_dir():
        pytest.fail(f"idefics2_worker/{folder}/ is missing")
    wrong = [
        f"{path.name} imports {module}"
        for path in _sources(folder)
        for module, _ in _imports(path)
        if (target := _folder(module)) is not None and target != folder and target not in ALLOWED[folder]
    ]
    assert wrong == []


def test_every_module_of_the_package_lives_in_a_folder_the_rules_name() -> None:
    folders = {path.name for path in PACKAGE.iterdir() if path.is_dir() and path.name != "__pycache__"}
    assert folders == set(ALLOWED)
    assert sorted(path.name for path in PACKAGE.glob("*.py")) == ["__init__.py", "__main__.py"]


def test_the_kernels_import_only_torch_and_triton() -> None:
    outside = [
        f"{path.name} imports {module}"
        for path in _sources("kernels")
        for module, level in _imports(path)
        if not level and module.split(".")[0] not in ALLOWED_FOR_KERNELS
    ]
    assert outside == []


def python_in_package(code: str) -> subprocess.CompletedProcess[str]:
    """Runs `code` in a fresh interpreter beside the package, so what it imports is what the code alone imports."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=PACKAGE.parent, timeout=120
    )


def test_the_protocol_and_the_server_import_no_torch() -> None:
    code = (
        "import sys\n"
        "import idefics2_worker.server.frame_loop, idefics2_worker.protocol.results\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'PIL', 'numpy') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    done = python_in_package(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ""


def test_every_module_imports_without_triton() -> None:
    # The managed environment's torch is a CPU build, which brings no Triton: the engine still imports the fast
    # decoder's modules (to choose it or not), so no module may need a Triton name at import time.
    code = (
        "import importlib, pkgutil, sys\n"
        "sys.modules['triton'] = sys.modules['triton.language'] = None\n"
        "import idefics2_worker\n"
        "names = [m.name for m in pkgutil.walk_packages(idefics2_worker.__path__, 'idefics2_worker.')]\n"
        "for name in names:\n"
        "    if not name.endswith('__main__'):\n"
        "        importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    done = python_in_package(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) > 40
