"""Per-token cost of structured output (llguidance's mask) on the fast decoder, at batch 1 and 8.

Runs the same requests through the fast decoder's batch twice, free and with a JSON Schema, with a fixed number of
new tokens each (minNewTokens = maxNewTokens, so both do the same number of steps), and prints the decode time per
step, the difference, and the CPU time llguidance spent computing masks. On a GPU the mask is computed while the
step runs, so the difference is what is left of it after that overlap.

    python scripts/gpu/bench_structured.py --model HuggingFaceM4/idefics2-8b --device cuda --batches 1 8
    python scripts/gpu/bench_structured.py   # the embedded tiny model on the CPU, eager steps
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))

from idefics2_worker.engine.engine import Engine  # noqa: E402
from idefics2_worker.protocol.params import parse_generate, parse_load  # noqa: E402

# At least 64 strings (3+ tokens each): the object cannot close within --tokens (default 128), so every step of
# the timed run is masked, through string and structure states alike.
SCHEMA = {
    "type": "object",
    "properties": {
        "colour": {"enum": ["red", "green", "blue"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 99},
        "notes": {"type": "array", "items": {"type": "string", "maxLength": 8}, "minItems": 64},
    },
    "required": ["colour", "count", "notes"],
}


def load(model: str, device: str, max_batch: int) -> Engine:
    engine = Engine()
    raw = {"model": model, "deviceMap": device, "decoder": "fast", "maxBatchSize": max_batch, "quantization": {}}
    engine.load(parse_load(raw), threading.Event(), lambda *_: None)
    return engine


def request(tokens: int, grammar: dict[str, str] | None) -> Any:
    options = {"maxNewTokens": tokens, "minNewTokens": tokens, "grammar": grammar}
    message = {"role": "user", "content": [{"type": "text", "text": "Describe a picture of a red square as JSON."}]}
    return parse_generate({"messages": [message], "options": options}, 0)


def run_batch(engine: Engine, batch: int, tokens: int, grammar: dict[str, str] | None) -> dict[str, float]:
    decoder = engine.batch
    assert decoder is not None
    done: list[Any] = []
    for _ in range(batch):
        decoder.admit(request(tokens, grammar), b"", lambda *_: None, threading.Event(), lambda r, e: done.append(e))
    masks = [s.grammar for s in decoder.running if s.grammar is not None]
    sync(engine)
    started = time.perf_counter()
    steps = 0
    while decoder.busy:
        decoder.step()
        steps += 1
    sync(engine)
    elapsed = time.perf_counter() - started
    assert all(error is None for error in done), done
    mask_seconds = sum(m.mask_seconds for m in masks)
    mask_count = sum(m.masks for m in masks)
    return {
        "ms_per_step": 1000 * elapsed / max(steps, 1),
        "mask_ms_each": 1000 * mask_seconds / max(mask_count, 1),
    }


def sync(engine: Engine) -> None:
    import torch

    if engine.loaded is not None and str(engine.loaded.model.device).startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "assets" / "tiny-idefics2"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    engine = load(args.model, args.device, max(args.batches))
    grammar = {"type": "json_schema", "source": json.dumps(SCHEMA)}
    rows = []
    for batch in args.batches:
        run_batch(engine, batch, args.tokens, None)  # warm-up: graphs captured, caches grown
        run_batch(engine, batch, args.tokens, grammar)
        free = min(run_batch(engine, batch, args.tokens, None)["ms_per_step"] for _ in range(args.repeats))
        runs = [run_batch(engine, batch, args.tokens, grammar) for _ in range(args.repeats)]
        masked = min(r["ms_per_step"] for r in runs)
        row = {
            "batch": batch,
            "free_ms_per_step": round(free, 3),
            "schema_ms_per_step": round(masked, 3),
            "overhead_pct": round(100 * (masked - free) / free, 1),
            "mask_compute_ms_each": round(min(r["mask_ms_each"] for r in runs), 4),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"model": args.model, "device": args.device, "tokens": args.tokens, "results": rows}))


if __name__ == "__main__":
    main()
