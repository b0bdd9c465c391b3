"""Compiles the sources a worker listed (`sources.record_sources`) into the bytecode folder the SDK gives as
PYTHONPYCACHEPREFIX, then writes `--marker`: from then on the SDK starts workers reading that folder.

    python -m idefics2_worker.bytecode.warm --sources FILE --marker FILE

Run by the SDK after a load, at low priority, its output discarded. Only compiles: nothing listed is imported. A
source that no longer exists or does not compile is skipped (the worker that imports it compiles it, as before).
"""

from __future__ import annotations

import argparse
import json
import py_compile
import sys
from importlib.util import cache_from_source
from pathlib import Path


def compile_sources(sources: list[str]) -> tuple[int, int]:
    """Compiles each source whose bytecode is not there yet (under `sys.pycache_prefix`); returns (compiled, already
    there). Skipped sources count in neither."""
    compiled = present = 0
    for source in sources:
        target = Path(cache_from_source(source))
        if target.exists():
            present += 1
            continue
        try:
            py_compile.compile(source, cfile=str(target), doraise=True)
        except (OSError, py_compile.PyCompileError):
            continue
        compiled += 1
    return compiled, present


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m idefics2_worker.bytecode.warm")
    parser.add_argument("--sources", required=True, help="the JSON list of sources a worker wrote")
    parser.add_argument("--marker", required=True, help="written once the sources are compiled")
    args = parser.parse_args(argv)
    if not sys.pycache_prefix:
        print("PYTHONPYCACHEPREFIX must name the bytecode folder", file=sys.stderr)
        return 2
    sources = json.loads(Path(args.sources).read_text())
    if not isinstance(sources, list) or not all(isinstance(source, str) for source in sources):
        print(f"{args.sources} is not a JSON list of paths", file=sys.stderr)
        return 2
    compiled, present = compile_sources(sources)
    marker = Path(args.marker)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"compiled": compiled, "present": present, "listed": len(sources)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
