#!/usr/bin/env python3
"""The worker's decode rate on a GPU, with the host's per-token work overlapped or not (`BatchDecoder.overlap`).

Loads the model as the worker does (`Engine.load`), then runs the blog request (its conversation and pictures,
128 new tokens, EOS held back by minNewTokens as the benchmark does) through the fast decoder in this process: alone
and as 8 copies admitted together, the two settings alternated, `--runs` times each. Reports the worker's own decode
rate (`decodeTokensPerSecond`, tokens after the first over the decode's time) per run and its median, the captured
step's replay time at batch 1 and 8 (the rate the decode would reach with no host time between steps), and whether
every run's ids equal the first's.

Usage: python scripts/gpu/worker_decode_rate.py --model DIR --messages FILE.json --image A --image B
           [--quantization bf16 --quantization 8bit ...] [--runs 3] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_batched_prefill import add_conversation_arguments, conversation, load
from demo_inputs import as_payload
from idefics2_worker.protocol.params import parse_generate
from profile_decode_step import prepare, replay_ms

NEW_TOKENS = 128


def decode_run(engine: Any, params: Any, payload: bytes, copies: int) -> list[Any]:
    """`copies` of the request admitted together and decoded to the end; their results."""
    decoder = engine.batch
    done: list[tuple[Any, BaseException | None]] = []
    admission = (params, payload, lambda *_: None, threading.Event(), lambda r, e: done.append((r, e)))
    outcomes = decoder.admit_many([admission] * copies)
    assert all(outcome is True for outcome in outcomes), outcomes
    while decoder.busy:
        decoder.step()
    for _, error in done:
        if error is not None:
            raise error
    return [result for result, _ in done]


def rates_one(args: Any, quantization: str, messages: list[dict[str, Any]], images: list[Any]) -> dict[str, Any]:
    engine = load(args.model, quantization)
    decoder = engine.batch
    specs, payload = as_payload(images)
    options = {"maxNewTokens": NEW_TOKENS, "minNewTokens": NEW_TOKENS}
    params = parse_generate({"messages": messages, "images": specs, "options": options}, len(payload))
    result: dict[str, Any] = {}
    for copies in (1, 8):
        decode_run(engine, params, payload, copies)  # warm-up: graphs for this batch size, kernels compiled
        runs: dict[str, list[float]] = {"off": [], "on": []}
        ids: list[list[int]] = []
        for _ in range(args.runs):
            for setting in ("off", "on"):
                decoder.overlap = setting == "on"
                results = decode_run(engine, params, payload, copies)
                rate = statistics.median(r.timings.to_wire()["decodeTokensPerSecond"] for r in results)
                runs[setting].append(round(rate * (copies if copies > 1 else 1), 1))
                ids.extend(r.token_ids for r in results)
        result[f"batch{copies}"] = {
            "tokens_per_second_runs": runs,
            "tokens_per_second_median": {k: round(statistics.median(v), 1) for k, v in runs.items()},
            "ids_identical": all(i == ids[0] for i in ids),
        }
        print(quantization, copies, json.dumps(result[f"batch{copies}"]), file=sys.stderr, flush=True)
    decoder.overlap = True
    prepare(decoder.graphs)
    for count in (1, 8):
        step_ms = replay_ms(decoder.graphs, count)
        result[f"replay_ms_batch{count}"] = round(step_ms, 3)
        result[f"replay_tokens_per_second_batch{count}"] = round(1000 * count / step_ms, 1)
    engine.unload()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    add_conversation_arguments(parser)
    parser.add_argument("--quantization", action="append", choices=["bf16", "8bit", "4bit"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    messages, images = conversation(args)
    results: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "new_tokens": NEW_TOKENS}
    for quantization in args.quantization or ["bf16", "8bit", "4bit"]:
        results[quantization] = rates_one(args, quantization, messages, images)
        torch.cuda.empty_cache()
    text = json.dumps(results, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
