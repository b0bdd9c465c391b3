#!/usr/bin/env python3
"""The bf16 load's model phase, the reference's way and the worker's, alternated in one process (GPU).

`load-pairs.mjs` compares whole loads in fresh processes, where the imports' spread (seconds between processes)
hides a difference of a few tenths. Here every import is paid first, by a load that is not counted; then each way
loads the processor and the model in turn, `--rounds` times, and the seconds of each are printed:

- `from_pretrained`: what `bench_reference.py` times (AutoProcessor, then the model with device_map="auto");
- `from_pretrained, another thread`: the same, on a thread other than the main one, as the worker loads;
- `load_model`: the worker's `engine.loading.load_model` (its progress hooks; each event serialised as a frame
  to /dev/null), on another thread;
- `engine load`: the worker's whole `Engine.load` (load_model, then the fast decoder's preparation), on another
  thread: the SDK's load, less its interpreter, imports and pipe.

Usage: python scripts/gpu/load_in_process.py --model DIR [--rounds 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
from transformers import AutoModelForImageTextToText, AutoProcessor

from idefics2_worker.engine.compat import expose_pil_image_processor
from idefics2_worker.engine.engine import Engine
from idefics2_worker.engine.loading import load_model
from idefics2_worker.protocol.params import parse_load


def on_progress_to(sink: Any) -> Callable[..., None]:
    def on_progress(stage: str, message: str, **counts: Any) -> None:
        sink.write(json.dumps({"type": "progress", "stage": stage, "message": message, **counts}).encode() + b"\n")

    return on_progress


def ways(model: str, sink: Any) -> dict[str, Callable[[], Any]]:
    params = parse_load(
        {
            "model": model,
            "quantization": {"mode": "none"},
            "dtype": "bfloat16",
            "deviceMap": "auto",
            "doImageSplitting": True,
        }
    )

    def reference() -> Any:
        processor = AutoProcessor.from_pretrained(model, do_image_splitting=True)
        loaded = AutoModelForImageTextToText.from_pretrained(model, device_map="auto", dtype=torch.bfloat16)
        return processor, loaded

    def worker() -> Any:
        return load_model(params, threading.Event(), on_progress_to(sink))

    def engine() -> Any:
        loading = Engine()
        loading.load(params, threading.Event(), on_progress_to(sink))
        return loading

    return {
        "from_pretrained": reference,
        "from_pretrained, another thread": lambda: on_thread(reference),
        "load_model": lambda: on_thread(worker),
        "engine load": lambda: on_thread(engine),
    }


def on_thread(fn: Callable[[], Any]) -> Any:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), name="idefics2-model")
    thread.start()
    thread.join()
    return out[0]


def seconds(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    loaded = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    took = time.perf_counter() - started
    del loaded
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    expose_pil_image_processor()
    with open("/dev/null", "wb") as sink:
        by_way = ways(args.model, sink)
        first = {name: round(seconds(fn), 3) for name, fn in by_way.items()}  # imports, CUDA, compiles: not counted
        print(f"first loads (not counted): {first}", flush=True)
        times: dict[str, list[float]] = {name: [] for name in by_way}
        names = list(by_way)
        for round_index in range(args.rounds):
            for name in names if round_index % 2 == 0 else reversed(names):
                times[name].append(round(seconds(by_way[name]), 3))
                print(f"round {round_index + 1} {name}: {times[name][-1]} s", flush=True)
    summary = {name: {"median_s": round(median(each), 3), "each_s": each} for name, each in times.items()}
    for name, s in summary.items():
        print(f"{name:34} {s['median_s']:.3f} s  {s['each_s']}")
    line = json.dumps(
        {
            "card": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "first_s": first,
            "ways": summary,
        }
    )
    print(line)
    if args.out:
        Path(args.out).write_text(line + "\n")


if __name__ == "__main__":
    main()
