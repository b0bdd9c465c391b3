#!/usr/bin/env python3
"""Two processes' import profiles (`python -X importtime` on stderr) side by side: what each imported and for how long.

Written for a cold load's question (BENCHMARKS.md, H81): does the worker import more than the reference program, or
the same modules more slowly? Prints, for each profile, the seconds spent in imports (the sum of every module's own
time), the module count and the slowest top-level imports; then the modules only one side imported, with their
time, and the two sides' time over the modules both imported.

Usage: python scripts/gpu/compare_import_profiles.py REFERENCE.txt WORKER.txt [--top 12] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

PREFIX = "import time:"


@dataclass(frozen=True)
class Imported:
    name: str
    self_us: int
    cumulative_us: int
    depth: int


def parse(path: Path) -> dict[str, Imported]:
    """The profile's modules by name (the first import of each; importtime reports a module once)."""
    modules: dict[str, Imported] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith(PREFIX) or "self [us]" in line:
            continue
        own, cumulative, label = line[len(PREFIX) :].split("|", 2)
        name = label.strip()
        # importtime indents each nested import by two spaces after the separator's one.
        depth = (len(label) - len(label.lstrip()) - 1) // 2
        modules.setdefault(name, Imported(name, int(own), int(cumulative), depth))
    return modules


def seconds(microseconds: float) -> float:
    return round(microseconds / 1e6, 3)


def summary(modules: dict[str, Imported], top: int) -> dict[str, object]:
    outermost = sorted((m for m in modules.values() if m.depth == 0), key=lambda m: -m.cumulative_us)
    return {
        "import_s": seconds(sum(m.self_us for m in modules.values())),
        "modules": len(modules),
        "slowest_top_level_s": {m.name: seconds(m.cumulative_us) for m in outermost[:top]},
    }


def only_in(one: dict[str, Imported], other: dict[str, Imported], top: int) -> dict[str, object]:
    alone = sorted((m for name, m in one.items() if name not in other), key=lambda m: -m.self_us)
    return {
        "modules": len(alone),
        "import_s": seconds(sum(m.self_us for m in alone)),
        "slowest_ms": {m.name: round(m.self_us / 1e3, 1) for m in alone[:top]},
    }


def compare(reference: dict[str, Imported], worker: dict[str, Imported], top: int) -> dict[str, object]:
    shared = [name for name in reference if name in worker]
    return {
        "reference": summary(reference, top),
        "worker": summary(worker, top),
        "worker_only": only_in(worker, reference, top),
        "reference_only": only_in(reference, worker, top),
        "shared": {
            "modules": len(shared),
            "reference_import_s": seconds(sum(reference[name].self_us for name in shared)),
            "worker_import_s": seconds(sum(worker[name].self_us for name in shared)),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("reference", type=Path)
    parser.add_argument("worker", type=Path)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = compare(parse(args.reference), parse(args.worker), args.top)
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
