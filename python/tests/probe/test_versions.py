"""The versions probe: Python's version and the worker's packages' versions, from metadata only."""

from __future__ import annotations

import platform
import py_compile
import sys
from importlib import metadata
from pathlib import Path

import pytest
from probe_process import run_probe

from idefics2_worker.engine.info import READY_PACKAGES
from idefics2_worker.engine.info import versions as ready_versions
from idefics2_worker.probe.versions import (
    WORKER_PACKAGES,
    compiled,
    installed_version,
    installed_versions,
    probe_versions,
    python_version,
)


def test_the_probe_prints_the_sdks_python_versions_object_as_the_last_line_of_stdout() -> None:
    report, before = run_probe("versions")
    assert report == probe_versions()
    assert set(report) == {
        "python",
        "torch",
        "transformers",
        "bitsandbytes",
        "accelerate",
        "pillow",
        "safetensors",
        "compiled",
    }
    assert before.strip() == ""


def test_the_python_version_is_major_minor_micro() -> None:
    assert python_version() == f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"


def test_an_installed_distribution_reads_its_metadata_and_a_missing_one_is_none() -> None:
    assert installed_version("pytest") == metadata.version("pytest")
    assert installed_version("no-such-distribution-idefics2") is None
    assert installed_versions(["pytest", "no-such-distribution-idefics2"]) == {
        "pytest": metadata.version("pytest"),
        "no-such-distribution-idefics2": None,
    }


def test_every_worker_package_is_found_in_the_test_environment() -> None:
    found = probe_versions()
    assert all(found[name] == metadata.version(name) for name in WORKER_PACKAGES)


def test_the_workers_ready_frame_reads_its_package_versions_through_the_probe_leaving_out_missing_ones() -> None:
    found = {name: installed_version(name) for name in READY_PACKAGES}
    expected = {"python": platform.python_version()} | {name: value for name, value in found.items() if value}
    assert ready_versions() == expected


def test_a_package_counts_as_compiled_only_with_its_init_bytecode_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("compiled_package", "source_package"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("VALUE = 1\n")
    monkeypatch.setattr(sys, "pycache_prefix", None)
    py_compile.compile(str(tmp_path / "compiled_package" / "__init__.py"), doraise=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert compiled(("compiled_package",))
    assert not compiled(("compiled_package", "source_package"))
    assert compiled(("no_such_package_idefics2",))


def test_the_test_environments_torch_and_transformers_are_compiled_as_pip_leaves_them() -> None:
    assert probe_versions()["compiled"] is True
