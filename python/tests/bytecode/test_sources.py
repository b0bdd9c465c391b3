"""The sources a worker lists once loaded (bytecode/sources.py): what it imported, written whole where the SDK asks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import load_params
from worker_process import WorkerProcess

import idefics2_worker.bytecode.sources as sources_module
from idefics2_worker.bytecode.sources import SOURCES_VARIABLE, imported_sources, record_sources


def test_the_imported_sources_are_the_py_files_of_loaded_modules_each_once_and_sorted() -> None:
    found = imported_sources()
    assert found == sorted(set(found))
    assert str(Path(sources_module.__file__).resolve()) in found
    assert str(Path(json.__file__).resolve()) in found
    assert all(path.endswith(".py") for path in found)
    assert sys.modules["sys"].__dict__.get("__file__") is None  # a built-in module has no source to list


def test_nothing_is_written_without_the_variable(tmp_path: Path) -> None:
    assert record_sources({}) is None
    assert list(tmp_path.iterdir()) == []


def test_the_list_is_written_whole_where_the_variable_says(tmp_path: Path) -> None:
    target = tmp_path / "lists" / "sources.json"
    assert record_sources({SOURCES_VARIABLE: str(target)}) == target
    assert json.loads(target.read_text()) == imported_sources()
    assert [path.name for path in target.parent.iterdir()] == ["sources.json"]


def test_an_unwritable_target_raises_for_the_caller_to_report(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(FileExistsError):
        record_sources({SOURCES_VARIABLE: str(blocker / "sources.json")})


@pytest.mark.timeout(180)
def test_a_worker_lists_what_its_load_imported_and_an_unwritable_list_leaves_the_load_standing(tmp_path: Path) -> None:
    target = tmp_path / "sources.json"
    process = WorkerProcess({SOURCES_VARIABLE: str(target)})
    try:
        process.next_frame(timeout=60)
        _, frame = process.call("load", load_params(), timeout=120)
        assert frame["type"] == "result", frame
        listed = json.loads(target.read_text())
        assert any(path.endswith("idefics2_worker/engine/engine.py") for path in listed)
        assert any(path.endswith("transformers/models/idefics2/modeling_idefics2.py") for path in listed)
        assert any(path.endswith("torch/__init__.py") for path in listed)
    finally:
        process.stop()
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    process = WorkerProcess({SOURCES_VARIABLE: str(blocked / "sources.json")})
    try:
        process.next_frame(timeout=60)
        _, frame = process.call("load", load_params(), timeout=120)
        assert frame["type"] == "result", frame
        assert "could not list the imported sources" in process.stderr_tail()
    finally:
        process.stop()
