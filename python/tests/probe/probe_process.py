"""Runs a probe as the SDK does: `python -m idefics2_worker.probe.<name>`, PYTHONPATH at python/, a bare environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PYTHON_DIR = Path(__file__).resolve().parents[2]


def probe_environment(extra_path: str | None = None) -> dict[str, str]:
    """The variables the SDK gives a probe, plus no byte-code files in the source tree from old interpreters."""
    path = [str(PYTHON_DIR)] + ([extra_path] if extra_path else [])
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.pathsep.join(path)}
    return env | {"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1"}


def run_probe(name: str, python: str = sys.executable, extra_path: str | None = None) -> tuple[dict[str, Any], str]:
    """(the JSON object on stdout's last line, everything stdout held before it), checking the exit code."""
    done = subprocess.run(
        [python, "-m", f"idefics2_worker.probe.{name}"],
        capture_output=True,
        text=True,
        env=probe_environment(extra_path),
        cwd=PYTHON_DIR.parent,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    *before, last = done.stdout.rstrip("\n").split("\n")
    return json.loads(last), "\n".join(before)


# The keys of each section, as src/runtime/doctor-probe.ts's zod schema reads them.
SHAPE = {
    "torch": {"ok", "error", "cuda"},
    "cuda": {"available", "error", "devices"},
    "bitsandbytes": {"present", "ok", "error", "backend", "library", "compiledWithCuda", "libraryError"},
    "torchvision": {"present", "ok", "version", "error"},
}


def assert_wire_shape(report: dict[str, Any]) -> None:
    assert set(report) == {"platform", "machine", *SHAPE}
    assert all(set(report[section]) == keys for section, keys in SHAPE.items())
    assert isinstance(report["platform"], str)
    assert isinstance(report["machine"], str)
