"""Compiling a worker's listed sources into the SDK's bytecode folder (bytecode/warm.py), and an interpreter given
that folder reading them back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import PYTHON_DIR


def run_warm(listed: Path, marker: Path, prefix: Path | None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(PYTHON_DIR)}
    if prefix is not None:
        env["PYTHONPYCACHEPREFIX"] = str(prefix)
    module = "idefics2_worker.bytecode.warm"
    return subprocess.run(
        [sys.executable, "-m", module, "--sources", str(listed), "--marker", str(marker)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def warm(sources: list[str], tmp_path: Path, prefix: Path | None) -> subprocess.CompletedProcess[str]:
    listed = tmp_path / "sources.json"
    listed.write_text(json.dumps(sources))
    return run_warm(listed, tmp_path / "m", prefix)


def test_listed_sources_are_compiled_into_the_folder_once_and_an_interpreter_reads_them_from_there(
    tmp_path: Path,
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "good_module.py").write_text("ANSWER = 42\n")
    (code / "broken_module.py").write_text("def broken(:\n")
    prefix = tmp_path / "bytecode"
    listed = [str(code / "good_module.py"), str(code / "broken_module.py"), str(code / "gone.py")]

    done = warm(listed, tmp_path, prefix)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "m").read_text()) == {"compiled": 1, "present": 0, "listed": 3}
    assert not (code / "__pycache__").exists()
    assert list(prefix.rglob("good_module.*.pyc"))
    assert not list(prefix.rglob("broken_module.*.pyc"))
    assert warm(listed, tmp_path, prefix).returncode == 0
    assert json.loads((tmp_path / "m").read_text()) == {"compiled": 0, "present": 1, "listed": 3}

    # Reading only (as a worker started before the folder was warm would not write): -v names where code came from.
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(code), "PYTHONPYCACHEPREFIX": str(prefix)}
    read = subprocess.run(
        [sys.executable, "-v", "-c", "import good_module; print(good_module.ANSWER)"],
        capture_output=True,
        text=True,
        env=env | {"PYTHONDONTWRITEBYTECODE": "1"},
        timeout=60,
        check=True,
    )
    assert read.stdout.strip() == "42"
    loaded_from = [line for line in read.stderr.splitlines() if line.startswith("# code object from")]
    assert any(str(prefix) in line and "good_module" in line for line in loaded_from), loaded_from[-3:]


def test_without_a_bytecode_folder_it_refuses_and_writes_no_marker(tmp_path: Path) -> None:
    done = warm([], tmp_path, None)
    assert done.returncode == 2
    assert "PYTHONPYCACHEPREFIX" in done.stderr
    assert not (tmp_path / "m").exists()


def test_a_list_that_is_not_paths_is_refused(tmp_path: Path) -> None:
    listed = tmp_path / "sources.json"
    listed.write_text(json.dumps({"not": "a list"}))
    done = run_warm(listed, tmp_path / "m", tmp_path / "bytecode")
    assert done.returncode == 2
    assert "not a JSON list of paths" in done.stderr
