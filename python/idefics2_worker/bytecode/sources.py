"""The Python sources a worker has imported, written where the SDK asks (IDEFICS2_BYTECODE_SOURCES) once it has
loaded a model, for `bytecode.warm` to compile."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SOURCES_VARIABLE = "IDEFICS2_BYTECODE_SOURCES"


def imported_sources() -> list[str]:
    """The `.py` files of every module imported so far, sorted, each once."""
    found: set[str] = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and path.endswith(".py") and os.path.isfile(path):
            found.add(os.path.abspath(path))
    return sorted(found)


def record_sources(environ: dict[str, str] | None = None) -> Path | None:
    """Writes `imported_sources()` as a JSON list to the file IDEFICS2_BYTECODE_SOURCES names (whole or not at all:
    written beside it, then renamed); returns it, or None where the variable is not set. An error writing it is
    left to the caller: the list only saves later starts some time."""
    target = (environ if environ is not None else os.environ).get(SOURCES_VARIABLE)
    if not target:
        return None
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(imported_sources()))
    partial.replace(path)
    return path
