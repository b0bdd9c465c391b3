"""The versions probe counts a package installed only when it can be used: its module is there, what it requires is
installed, and (with --files) every file its RECORD lists exists. Metadata alone says nothing about a deleted folder."""

from __future__ import annotations

import compileall
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from probe_process import PYTHON_DIR

from idefics2_worker.probe.versions import IMPORT_NAMES, WORKER_PACKAGES

VERSIONS = {
    "torch": "2.13.0",
    "transformers": "5.17.0",
    "bitsandbytes": "0.50.2",
    "accelerate": "1.15.0",
    "pillow": "13.0.0",
    "safetensors": "0.8.0",
}
# What each fake package always requires, and a requirement it needs only with an extra or on another platform.
REQUIRES = {
    "transformers": ["tokenizers<=0.23.0,>=0.22.0", 'torchvision; extra == "vision"'],
    "tokenizers": ["huggingface-hub>=0.16"],
    "torch": ['nvidia-nccl-cu12==2.27.3; platform_system == "Linux"'],
}


def _distribution(site: Path, name: str, version: str, module: str) -> None:
    package = site / module
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "code.py").write_text("")
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    requires = "".join(f"Requires-Dist: {requirement}\n" for requirement in REQUIRES.get(name, []))
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{requires}")
    files = [
        f"{module}/__init__.py",
        f"{module}/sub/code.py",
        f"{module}/__pycache__/x.cpython-311.pyc",
        "../../bin/tool",
    ]
    records = [*files, f"{info.name}/METADATA", f"{info.name}/RECORD"]
    (info / "RECORD").write_text("".join(f"{record},,\n" for record in records))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A site-packages holding the six worker packages and what transformers requires, all complete."""
    folder = tmp_path / "site"
    folder.mkdir()
    for name, version in VERSIONS.items():
        _distribution(folder, name, version, IMPORT_NAMES[name])
    _distribution(folder, "tokenizers", "0.22.1", "tokenizers")
    _distribution(folder, "huggingface-hub", "0.30.0", "huggingface_hub")
    return folder


def probe(site: Path, *args: str) -> dict[str, Any]:
    """The versions probe's report on an interpreter that sees only `site` (no site-packages of its own: -S)."""
    done = subprocess.run(
        [sys.executable, "-S", "-m", "idefics2_worker.probe.versions", *args],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{site}:{PYTHON_DIR}", "PYTHONDONTWRITEBYTECODE": "1"},
        cwd=site.parent,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_complete_packages_are_reported_with_their_versions_and_nothing_damaged(site: Path) -> None:
    for args in ((), ("--files",)):
        report = probe(site, *args)
        assert report == {**VERSIONS, "python": report["python"], "compiled": False}


def test_packages_count_as_compiled_once_torch_and_transformers_have_their_bytecode(site: Path) -> None:
    # The fake site's sources were never compiled, as in an interpreter whose packages were installed with
    # PYTHONDONTWRITEBYTECODE set: the SDK then keeps the worker's bytecode in its own folder.
    assert probe(site)["compiled"] is False
    compileall.compile_dir(str(site / "torch"), quiet=1)
    assert probe(site)["compiled"] is False
    compileall.compile_dir(str(site / "transformers"), quiet=1)
    assert probe(site)["compiled"] is True


@pytest.mark.parametrize("name", WORKER_PACKAGES)
def test_a_worker_package_whose_folder_was_deleted_is_missing_although_its_metadata_remains(
    site: Path, name: str
) -> None:
    shutil.rmtree(site / IMPORT_NAMES[name])
    report = probe(site)
    assert report[name] is None
    assert report["damaged"] == [
        {
            "name": name,
            "version": VERSIONS[name],
            "problem": f"its module {IMPORT_NAMES[name]} cannot be found",
            "requiredBy": None,
        }
    ]


def test_a_deleted_file_of_a_package_is_found_by_the_files_check_only(site: Path) -> None:
    (site / "transformers" / "sub" / "code.py").unlink()
    assert "damaged" not in probe(site)
    report = probe(site, "--files")
    assert report["transformers"] is None
    assert report["damaged"] == [
        {
            "name": "transformers",
            "version": "5.17.0",
            "problem": "its file transformers/sub/code.py is missing",
            "requiredBy": None,
        }
    ]


def test_a_requirement_uninstalled_or_damaged_is_named_with_what_requires_it(site: Path) -> None:
    # Uninstalled: its metadata gone. Two levels down: a file of what tokenizers requires.
    shutil.rmtree(site / "tokenizers-0.22.1.dist-info")
    assert probe(site)["damaged"] == [
        {
            "name": "tokenizers",
            "version": None,
            "problem": "not installed, but transformers requires it",
            "requiredBy": "transformers",
        }
    ]
    _distribution(site, "tokenizers", "0.22.1", "tokenizers_again")
    (site / "huggingface_hub" / "__init__.py").unlink()
    damaged = probe(site, "--files")["damaged"]
    assert damaged == [
        {
            "name": "huggingface-hub",
            "version": "0.30.0",
            "problem": "its file huggingface_hub/__init__.py is missing",
            "requiredBy": "tokenizers",
        }
    ]


def test_byte_code_scripts_and_conditional_requirements_are_not_required(site: Path) -> None:
    # The RECORDs list a .pyc and ../../bin/tool that do not exist; torchvision and nvidia-nccl are conditional.
    assert "damaged" not in probe(site, "--files")
