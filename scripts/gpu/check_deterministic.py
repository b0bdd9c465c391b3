#!/usr/bin/env python3
"""`deterministic: true` on a GPU: the blog request gets the same ids alone and inside batches, and what it costs.

Loads the model as the worker does (`Engine.load`: the fast decoder, CUDA graphs), then with deterministic on runs
the blog request (the demo conversation and its two pictures) 8 times alone, 4 times beside 3 other requests and
4 times beside 8 others (different prompts and lengths; the target joins first, in the middle or last), and
asserts that every run gives the same ids. The same runs with deterministic off are reported, not asserted (ids
may differ there). Then decode speed at batch 1 and 8, off vs on. Prints a table; --out writes JSON.

Usage: python scripts/gpu/check_deterministic.py --model DIR [--quantization bf16|8bit|4bit] [--new-tokens 64]
           [--out result.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python" / "tests"))
from benchmark_quantization import QUANTIZATIONS
from demo_inputs import as_payload, demo_images, demo_messages
from idefics2_worker.decode.batch_decoder import BatchDecoder
from idefics2_worker.decode.prefill import PrefillPlan
from idefics2_worker.engine.engine import Engine
from idefics2_worker.protocol.params import parse_generate, parse_load

OTHER_QUESTIONS = [
    ("What is the capital of France?", 0.5),
    ("Write a haiku about the sea.", 1.0),
    ("Explain what a hash table is.", 1.5),
    ("List three prime numbers.", 0.25),
    ("Describe the colour blue to someone who cannot see.", 2.0),
    ("Why is the sky blue?", 0.75),
    ("Count from one to twenty.", 1.25),
    ("Say hello.", 0.5),
]


def load_params(model: str, quantization: str, max_batch: int) -> dict[str, Any]:
    mode = "none" if quantization == "bf16" else quantization
    params: dict[str, Any] = {"model": model, "quantization": {"mode": mode}, "decoder": "fast"}
    params |= {"maxBatchSize": max_batch, "deterministic": True}
    return params | ({"dtype": "bfloat16"} if quantization == "bf16" else {})


def request(messages: list[dict[str, Any]], images: list[Any], tokens: int) -> tuple[Any, bytes]:
    specs, payload = as_payload(images)
    options = {"maxNewTokens": tokens, "minNewTokens": tokens}
    return parse_generate({"messages": messages, "images": specs, "options": options}, len(payload)), payload


def other_request(index: int, tokens: int, *, same_length: bool = False) -> tuple[Any, bytes]:
    """A text-only request, different per index; its length a share of `tokens` unless `same_length`."""
    question, share = OTHER_QUESTIONS[index % len(OTHER_QUESTIONS)]
    messages = [{"role": "user", "content": [{"type": "text", "text": question}]}]
    return request(messages, [], tokens if same_length else max(1, int(tokens * share)))


class Runner:
    """Admits requests into one BatchDecoder and steps it until they finish; collects each request's ids."""

    def __init__(self, decoder: BatchDecoder) -> None:
        self.decoder = decoder
        self.results: dict[str, Any] = {}

    def admit(self, name: str, params: Any, payload: bytes) -> None:
        def done(result: Any, error: BaseException | None) -> None:
            self.results[name] = result.token_ids if result is not None else repr(error)

        if not self.decoder.admit(params, payload, lambda *_: None, threading.Event(), done):
            raise RuntimeError(f"{name} was left to generate()")

    def drain(self) -> float:
        """Steps until nothing runs; the seconds the steps took."""
        started = time.perf_counter()
        while self.decoder.busy:
            self.decoder.step()
        torch.cuda.synchronize()
        return time.perf_counter() - started


def target_among(decoder: BatchDecoder, others: int, join_at: int, tokens: int, seed: int) -> list[int]:
    """The blog request's ids, admitted after `join_at` of `others` other requests (the rest after it)."""
    runner = Runner(decoder)
    target = request(demo_messages(), demo_images(), tokens)
    for index in range(others):
        if index == join_at:
            runner.admit("target", *target)
        runner.admit(f"other {index}", *other_request(index + seed, tokens))
        if index % 2 == 0:
            decoder.step()  # others at other positions: some have decoded a token before the next joins
    if join_at >= others:
        runner.admit("target", *target)
    runner.drain()
    return runner.results["target"]


def identity_runs(decoder: BatchDecoder, tokens: int) -> dict[str, list[list[int]]]:
    runs: dict[str, list[list[int]]] = {"alone": [target_among(decoder, 0, 0, tokens, 0) for _ in range(8)]}
    for others in (3, 8):
        runs[f"beside {others}"] = [
            target_among(decoder, others, join_at, tokens, seed)
            for seed, join_at in enumerate((0, others // 2, others, 1))
        ]
    decoder.release()
    return runs


def decode_speed(decoder: BatchDecoder, batch: int, tokens: int) -> float:
    """Tokens per second of the steps for `batch` requests of `tokens` new tokens each (after one warm-up run)."""
    for _ in range(2):
        runner = Runner(decoder)
        runner.admit("target", *request(demo_messages(), demo_images(), tokens))
        for index in range(batch - 1):
            runner.admit(f"other {index}", *other_request(index, tokens, same_length=True))
        seconds = runner.drain()
    decoder.release()
    return batch * (tokens - 1) / seconds  # the first token of each comes from its prefill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--quantization", choices=sorted(QUANTIZATIONS), default="bf16")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--out")
    args = parser.parse_args()

    with contextlib.redirect_stdout(sys.stderr):
        engine = Engine()
        engine.load(parse_load(load_params(args.model, args.quantization, 16)), threading.Event(), lambda *_: None)
        assert engine.batch is not None, "the fast decoder did not load"
        assert engine.loaded is not None
        decoders = {
            "on": engine.batch,
            "off": BatchDecoder(engine.loaded, 16, PrefillPlan.fastest(engine.loaded.model), use_graphs=True),
        }
        report: dict[str, Any] = {"model": args.model, "quantization": args.quantization, "new_tokens": args.new_tokens}
        for name, decoder in decoders.items():
            runs = identity_runs(decoder, args.new_tokens)
            first = runs["alone"][0]
            report[f"identical_{name}"] = {kind: all(ids == first for ids in found) for kind, found in runs.items()}
            report[f"ids_{name}"] = first
        report["off_vs_on_same_ids"] = report["ids_off"] == report["ids_on"]
        for name, decoder in decoders.items():
            for batch in (1, 8):
                report[f"tok_s_{name}_batch{batch}"] = decode_speed(decoder, batch, args.new_tokens)
        for batch in (1, 8):
            on, off = report[f"tok_s_on_batch{batch}"], report[f"tok_s_off_batch{batch}"]
            report[f"cost_batch{batch}"] = 1.0 - on / off

    print(f"{'':24}{'off':>12}{'on':>12}{'cost':>8}")
    for batch in (1, 8):
        off, on = report[f"tok_s_off_batch{batch}"], report[f"tok_s_on_batch{batch}"]
        print(f"decode tok/s, batch {batch:<5}{off:>12.1f}{on:>12.1f}{report[f'cost_batch{batch}']:>8.1%}")
    for name in ("on", "off"):
        print(f"identical ids, deterministic {name}: {report[f'identical_{name}']}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    failed = [kind for kind, same in report["identical_on"].items() if not same]
    assert not failed, f"deterministic on, the blog request's ids differed: {failed}"


if __name__ == "__main__":
    main()
