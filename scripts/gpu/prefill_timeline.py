#!/usr/bin/env python3
"""Where a prefill's wall time goes that the GPU does not spend (GPU): host launches, host syncs, idle gaps.

Loads the model as the worker does (`Engine.load`, the fast decoder's plan), prepares the blog request, warms up,
then:
- times the worker's prefill (median of --runs, GPU synchronised, with Python's garbage collections in those runs),
  alone or N copies in one batched forward;
- traces one prefill with torch.profiler (host and GPU) and splits it into regions (the vision tower's calls, the
  text model, the rest). Per region: wall, GPU busy (the union of kernels and copies), GPU idle, kernels, and the
  host's waits for the GPU (synchronising runtime calls);
- lists the GPU's time by kernel (the 20 largest) and by the Python line that launched it, and the largest GPU
  idle gaps with the Python line whose launch ended each one;
- lists every line that synchronised the host with the GPU (torch's sync debug mode);
- profiles the host's Python for one prefill (cProfile): the functions that take its time;
- with --admission, all of that for the worker's whole path of --requests one-token requests sent together instead
  (`BatchDecoder.admit_many`: preprocessing, prefill, token choice set up, first tokens), with the first request's
  own preprocess and prefill times; a messages file without pictures (and no --image) times text requests;
- with --tower-ab, times the vision tower through transformers' masks (get_image_features) against the mask-free
  path (decode/vision_tower.py), alternating in one process, and checks that the first-token logits are equal;
  with --graph-ab, the same for that tower run eagerly against replayed from CUDA graphs (decode/vision_graphs.py);
  with --projections-ab, the prefill (or with --admission, the admission's timings alone) with each layer's q/k/v and
  gate/up as one product against each projection alone (decode/prefill_projections.py); with --rotary-ab, the rotary
  embedding as one kernel per layer against transformers' (decode/prefill_rotary.py); with --store-ab (and
  --admission), the KV slots' stores and moves for all layers at once against a copy per layer and row
  (decode/kv_slots.py).
An idle GPU under a busy host means the host is the bound there: fewer launches or a CUDA graph would help. An
idle GPU after a sync means the sync cost the gap.

Usage: python scripts/gpu/prefill_timeline.py --model DIR --messages FILE.json --image A --image B
           [--quantization bf16|8bit|4bit ...] [--requests 1] [--runs 5] [--freeze-gc] [--no-trace]
           [--tower-ab] [--graph-ab] [--gemm-ab] [--projections-ab] [--rotary-ab] [--store-ab] [--admission]
           [--out result.json]
"""

from __future__ import annotations

import argparse
import bisect
import cProfile
import gc
import io
import json
import pstats
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_batched_prefill import add_conversation_arguments, conversation, load, prepared
from demo_inputs import as_payload
from idefics2_worker.decode import prefill as prefill_module
from idefics2_worker.decode import prefill_linears
from idefics2_worker.decode.batch_decoder import Admission
from idefics2_worker.decode.kv_slots import KVSlots
from idefics2_worker.decode.prefill import prefill, prefill_many
from idefics2_worker.protocol.params import parse_generate
from profile_prefill import gemm_variants

SYNCHRONISING = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")
GAP_US = 50.0


# The calls traced as regions: label, the object that owns the call (from the model), the call's attribute.
REGIONS = (
    # The prefill's own entry to the pictures (the vision tower runs outside get_image_features where it can).
    ("vision tower + connector", lambda _model: prefill_module, "image_features_many"),
    ("text model", lambda model: model.model.text_model, "forward"),
    ("lm_head", lambda model: model.lm_head, "forward"),
)


def annotated(model: Any) -> list[tuple[Any, str, Any]]:
    """Wraps each region's call in a profiler annotation; returns what to restore."""
    saved = []
    for label, owner_of, name in REGIONS:
        owner = owner_of(model)
        original = owner.__dict__.get(name)
        call = getattr(owner, name)

        def wrapped(*args: Any, _call: Any = call, _label: str = label, **kwargs: Any) -> Any:
            with torch.profiler.record_function(_label):
                return _call(*args, **kwargs)

        setattr(owner, name, wrapped)
        saved.append((owner, name, original))
    return saved


def restore(saved: list[tuple[Any, str, Any]]) -> None:
    for owner, name, original in saved:
        if original is None:
            delattr(owner, name)
        else:
            setattr(owner, name, original)


def union_us(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    busy, reach = 0.0, start
    for began, ended in sorted(intervals):
        first, last = max(began, reach), min(ended, end)
        if last > first:
            busy += last - first
            reach = last
    return busy


def analyse(trace: dict[str, Any]) -> dict[str, Any]:
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    gpu = sorted((e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")), key=lambda e: e["ts"])
    runtime = {e["args"].get("correlation"): e for e in events if e.get("cat") == "cuda_runtime"}
    python = sorted((e for e in events if e.get("cat") == "python_function"), key=lambda e: e["ts"])
    python_starts = [e["ts"] for e in python]
    outer = next(e for e in events if e.get("cat") == "user_annotation" and e["name"] == "prefill")
    start, end = outer["ts"], outer["ts"] + outer["dur"]
    spans = [(e["ts"], e["ts"] + e["dur"]) for e in gpu]

    def line_of(ts: float) -> str:
        """The innermost Python frame of this project's or transformers' code running at ts."""
        best = "?"
        for e in python[: bisect.bisect_right(python_starts, ts)][-400:]:
            name = e["name"]
            if e["ts"] <= ts <= e["ts"] + e["dur"] and ("idefics2" in name or "transformers" in name):
                best = name
        return best

    def region_stats(first: float, last: float) -> dict[str, Any]:
        inside = [e for e in gpu if first <= e["ts"] < last]
        waits = [
            e for e in events
            if e.get("cat") == "cuda_runtime" and e["name"].startswith(SYNCHRONISING) and first <= e["ts"] < last
        ]  # fmt: skip
        busy = union_us(spans, first, last)
        return {
            "wall_ms": round((last - first) / 1000, 2),
            "gpu_busy_ms": round(busy / 1000, 2),
            "gpu_idle_ms": round((last - first - busy) / 1000, 2),
            "kernels": len(inside),
            "host_waits": len(waits),
            "host_wait_ms": round(sum(e["dur"] for e in waits) / 1000, 2),
        }

    result: dict[str, Any] = {"whole prefill": region_stats(start, end)}
    labels = {label for label, _, _ in REGIONS}
    for e in events:
        if e.get("cat") == "user_annotation" and e["name"] in labels:
            stats = region_stats(e["ts"], e["ts"] + e["dur"])
            previous = result.get(e["name"])
            if previous:  # several calls of one region: add them up
                stats = {key: round(previous[key] + stats[key], 2) for key in stats}
            result[e["name"]] = stats
    gaps = []
    reach = start
    for e in gpu:
        if e["ts"] - reach > GAP_US and start <= e["ts"] <= end:
            launch = runtime.get(e["args"].get("correlation"))
            gaps.append({
                "idle_us": round(e["ts"] - reach, 1),
                "at_ms": round((reach - start) / 1000, 2),
                "ended_by": line_of(launch["ts"]) if launch else "?",
            })  # fmt: skip
        reach = max(reach, e["ts"] + e["dur"])
    result["gaps_over_50us"] = {"count": len(gaps), "idle_ms": round(sum(g["idle_us"] for g in gaps) / 1000, 2)}
    result["largest_gaps"] = sorted(gaps, key=lambda g: g["idle_us"], reverse=True)[:20]
    by_line = Counter()
    for g in gaps:
        by_line[g["ended_by"]] += g["idle_us"]
    result["idle_by_launching_line_ms"] = {line: round(us / 1000, 2) for line, us in by_line.most_common(15)}
    by_kernel: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    for e in gpu:
        if start <= e["ts"] <= end:
            by_kernel[e["name"][:110]] += e["dur"]
            calls[e["name"][:110]] += 1
    result["gpu_ms_by_kernel"] = [
        {"kernel": name, "ms": round(us / 1000, 2), "calls": calls[name]} for name, us in by_kernel.most_common(20)
    ]
    result["gpu_ms_by_launching_line"] = gpu_time_by_line(gpu, runtime, line_of, start, end)
    return result


def gpu_time_by_line(
    gpu: list[dict[str, Any]], runtime: dict[Any, dict[str, Any]], line_of: Any, start: float, end: float
) -> list[dict[str, Any]]:
    """GPU time per (launching Python line, kernel): which line of the model's code each kernel's time belongs to.
    Kernels replayed from a CUDA graph count under the line that launched the graph."""
    by_pair: Counter[tuple[str, str]] = Counter()
    calls: Counter[tuple[str, str]] = Counter()
    lines: dict[Any, str] = {}
    for e in gpu:
        if not start <= e["ts"] <= end:
            continue
        correlation = e["args"].get("correlation")
        if correlation not in lines:
            launch = runtime.get(correlation)
            lines[correlation] = line_of(launch["ts"]) if launch else "?"
        pair = (lines[correlation], e["name"][:70])
        by_pair[pair] += e["dur"]
        calls[pair] += 1
    return [
        {"line": line, "kernel": kernel, "ms": round(us / 1000, 2), "calls": calls[(line, kernel)]}
        for (line, kernel), us in by_pair.most_common(40)
    ]


def synchronising_lines(run: Any) -> dict[str, int]:
    """Each source line where the host waited for the GPU, and how often, from torch's sync debug mode."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    lines = Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message))
    return dict(lines.most_common())


def host_profile(run: Any, rows: int = 30) -> list[dict[str, Any]]:
    """The host functions with the most time of their own in one prefill (cProfile inflates small calls alike)."""
    torch.cuda.synchronize()
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    torch.cuda.synchronize()
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    entries = []
    for (file, line, name), (_, calls, own, total, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = "/".join(Path(file).parts[-3:]) if file != "~" else "builtin"
        entries.append(
            {"function": f"{where}:{line} {name}", "calls": calls, "own_ms": own * 1e3, "total_ms": total * 1e3}
        )
    top = sorted(entries, key=lambda e: e["own_ms"], reverse=True)[:rows]
    return [{**e, "own_ms": round(e["own_ms"], 2), "total_ms": round(e["total_ms"], 2)} for e in top]


def timed(run: Any, runs: int, freeze_gc: bool) -> dict[str, Any]:
    """The prefill's wall time over `runs`, GPU synchronised, with Python's garbage collections in those runs."""
    if freeze_gc:
        gc.collect()
        gc.freeze()
    times, collections = [], []
    started_gc = 0.0

    def on_gc(phase: str, info: dict[str, int]) -> None:
        nonlocal started_gc
        if phase == "start":
            started_gc = time.perf_counter()
        else:
            collections.append((info["generation"], (time.perf_counter() - started_gc) * 1000))

    gc.callbacks.append(on_gc)
    reported: list[dict[str, Any]] = []  # the admitted request's own timings (--admission)
    try:
        for _ in range(runs):
            started = time.perf_counter()
            value = run()
            torch.cuda.synchronize()
            times.append((time.perf_counter() - started) * 1000)
            if isinstance(value, dict):
                reported.append(value)
    finally:
        gc.callbacks.remove(on_gc)
        gc.unfreeze()
    own = {
        f"request_{key}_runs": [round(r[key], 1) for r in reported] for key in ("preprocessMs", "prefillMs")
    } if reported else {}  # fmt: skip
    return own | {
        "prefill_ms_median": round(statistics.median(times), 2),
        "prefill_ms_range": [round(min(times), 2), round(max(times), 2)],
        "prefill_ms_runs": [round(t, 1) for t in times],
        "gc_frozen": freeze_gc,
        # Python's garbage collections during the timed runs: (generation, count, ms in all, longest ms).
        "gc_collections": [
            (generation, len(ms), round(sum(ms), 2), round(max(ms), 2))
            for generation in (0, 1, 2)
            if (ms := [d for g, d in collections if g == generation])
        ],
    }


def alternated(run: Any, runs: int, variants: dict[str, Any]) -> dict[str, Any]:
    """The prefill under each variant (a function that sets it up), alternating, after a round that warms each up;
    each variant's times and whether the first-token logits were equal across variants."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    logits: dict[str, torch.Tensor] = {}
    for repeat in range(runs + 1):
        for name, set_up in variants.items():
            set_up()
            torch.cuda.synchronize()
            started = time.perf_counter()
            out = run()
            torch.cuda.synchronize()
            if repeat:
                times[name].append((time.perf_counter() - started) * 1000)
            if isinstance(out, tuple):  # a prefill's (cache, logits); an admission gives its timings alone
                logits[name] = out[1]
    timing = {
        name: {"median_ms": round(statistics.median(t), 2), "range_ms": [round(min(t), 2), round(max(t), 2)]}
        for name, t in times.items()
    }
    if not logits:
        return timing
    first, *others = logits.values()
    for name, each in logits.items():
        timing[name]["logits_max_abs_diff_vs_first"] = float((each - first).abs().max())
    return timing | {
        "logits_equal": all(torch.equal(first, other) for other in others),
        "max_abs_diff": max((float((first - other).abs().max()) for other in others), default=0.0),
    }


def tower_ab(run: Any, runs: int) -> dict[str, Any]:
    """The vision tower through transformers' masks, then without them."""
    mask_free = prefill_module.runs_without_masks

    def choose(runs_without_masks: Any) -> Any:
        return lambda: setattr(prefill_module, "runs_without_masks", runs_without_masks)

    try:
        return alternated(
            run, runs, {"transformers' masks": choose(lambda _model: False), "without masks": choose(mask_free)}
        )
    finally:
        prefill_module.runs_without_masks = mask_free


def graph_ab(run: Any, runs: int, plan: Any) -> dict[str, Any]:
    """The mask-free vision tower run eagerly, then replayed from its graphs (captured in the warm-up)."""
    graphs = plan.vision_graphs
    if graphs is None:
        return {"skipped": "this plan has no vision graphs"}
    try:
        result = alternated(
            run,
            runs,
            {
                "eager tower": lambda: setattr(plan, "vision_graphs", None),
                "graph tower": lambda: setattr(plan, "vision_graphs", graphs),
            },
        )
    finally:
        plan.vision_graphs = graphs
    return result | {"graphs": len(graphs), "failed_captures": len(graphs.failed)}


def gemm_ab(run: Any, runs: int, plan: Any, model: Any) -> dict[str, Any]:
    """The worker's GEMM dtypes for the float32-compute layers, then other choices: profile_prefill's, and the fp16
    path without its input saturation or with fp16 outputs. The vision tower's graphs keep the linears they were
    captured with, so only text-model changes are compared here. Logits are compared with the worker's."""
    linears = plan.linears
    saturating, float32_sums = prefill_linears.float16_input, prefill_linears.float16_linear

    def fp16_outputs(half: Any, weight: Any, bias: Any, dtype: Any) -> Any:
        return torch.nn.functional.linear(half, weight, None if bias is None else bias.half()).to(dtype)

    def choose(chosen: Any, cast: Any = saturating, product: Any = float32_sums) -> Any:
        def set_up() -> None:
            plan.linears = chosen
            prefill_linears.float16_input, prefill_linears.float16_linear = cast, product

        return set_up

    choices = {"worker's": choose(linears)}
    choices |= {name: choose(variant) for name, variant in gemm_variants(model).items() if "vision" in name}
    choices["fp16 text, no saturation"] = choose(linears, cast=lambda x: x.to(torch.float16))
    choices["fp16 text, fp16 outputs"] = choose(linears, product=fp16_outputs)
    choices["bf16 everywhere (fails parity)"] = choose(gemm_variants(model)["bf16 everywhere"])
    try:
        return alternated(run, runs, choices)
    finally:
        choose(linears)()


def plan_part_ab(run: Any, runs: int, plan: Any, part: str, names: tuple[str, str]) -> dict[str, Any]:
    """The prefill with the plan's `part` as it is (the worker's plan, named names[0]), then without it (names[1])."""
    kept = getattr(plan, part)
    try:
        return alternated(
            run, runs, {names[0]: lambda: setattr(plan, part, kept), names[1]: lambda: setattr(plan, part, None)}
        )
    finally:
        setattr(plan, part, kept)


def projections_ab(run: Any, runs: int, plan: Any) -> dict[str, Any]:
    """Each layer's q/k/v and gate/up as one product (the worker's plan), then each projection alone."""
    projections = plan.projections
    if projections is None or not projections.groups():
        return {"skipped": "this plan joins no projections"}
    names = ("grouped projections", "each projection alone")
    return plan_part_ab(run, runs, plan, "projections", names) | {"groups": len(projections.groups())}


def rotary_ab(run: Any, runs: int, plan: Any) -> dict[str, Any]:
    """The rotary embedding as one kernel per layer (the worker's plan), then transformers' own function."""
    if plan.rotary is None or plan.rotary.module is None:
        return {"skipped": "this plan has no fused rotary embedding"}
    return plan_part_ab(run, runs, plan, "rotary", ("fused rotary", "transformers' rotary"))


def _store_per_layer(self: KVSlots, first_slot: int, cache: Any, rows: Any, lengths: Any) -> None:
    for offset, (row, length) in enumerate(zip(rows, lengths, strict=True)):
        slot = first_slot + offset
        for index, layer in enumerate(cache.layers):
            self.keys[index][slot, :, :length].copy_(layer.keys[row, :, :length])
            self.values[index][slot, :, :length].copy_(layer.values[row, :, :length])
        self.mask[slot].zero_()
        self.mask[slot, :, :, :length] = True


def _move_per_layer(self: KVSlots, source: int, target: int) -> None:
    for key, value in zip(self.keys, self.values, strict=True):
        key[target].copy_(key[source])
        value[target].copy_(value[source])
    self.mask[target].copy_(self.mask[source])


def store_ab(run: Any, runs: int) -> dict[str, Any]:
    """A group's rows stored in their slots, and slots moved, with a few kernels for all layers (the worker's), then
    with a copy per layer and row as before (the same values)."""
    group_store, group_move = KVSlots.store_prefills, KVSlots.move

    def choose(store: Any, move: Any) -> Any:
        def set_up() -> None:
            KVSlots.store_prefills, KVSlots.move = store, move

        return set_up

    try:
        return alternated(
            run,
            runs,
            {
                "all layers at once": choose(group_store, group_move),
                "a copy per layer and row": choose(_store_per_layer, _move_per_layer),
            },
        )
    finally:
        choose(group_store, group_move)()


def admission(engine: Any, messages: list[dict[str, Any]], images: list[Any], requests: int = 1) -> Any:
    """The worker's whole path for `requests` one-token requests sent together, in this process: the fast decoder
    admits them in one `admit_many` (preprocessing, prefill, token choice set up, first token) and finishes them;
    returns the first request's result's timings (ms)."""
    specs, payload = as_payload(images)
    options = {"maxNewTokens": 1, "minNewTokens": 1}
    params = parse_generate({"messages": messages, "images": specs, "options": options}, len(payload))
    decoder = engine.batch

    def run() -> dict[str, Any]:
        done: list[tuple[Any, BaseException | None]] = []
        admissions = [
            Admission(params, payload, lambda *_: None, threading.Event(), lambda r, e: done.append((r, e)))
            for _ in range(requests)
        ]
        for outcome in decoder.admit_many(admissions):
            if isinstance(outcome, BaseException):
                raise outcome
        while len(done) < requests:
            decoder.step()
        for _, error in done:
            if error is not None:
                raise error
        return done[0][0].timings.to_wire()

    return run


def timeline_one(args: Any, quantization: str, messages: list[dict[str, Any]], images: list[Any]) -> dict[str, Any]:
    steps: list[tuple[str, float]] = []
    engine = load(args.model, quantization, steps)
    model, plan = engine.loaded.model, engine.batch.plan
    inputs = [prepared(engine, messages, images) for _ in range(args.requests)]
    pad = getattr(engine.loaded.processor.tokenizer, "pad_token_id", None) or 0
    admitted = admission(engine, messages, images, args.requests) if args.admission else None

    def run() -> Any:
        with torch.profiler.record_function("prefill"):
            if admitted is not None:
                return admitted()
            if args.requests == 1:
                return prefill(model, inputs[0], plan)
            return prefill_many(model, inputs, plan, pad)

    started = time.perf_counter()
    run()  # the first prefill compiles what it needs (Triton's on-disk cache aside)
    torch.cuda.synchronize()
    steps.append(("first prefill", round((time.perf_counter() - started) * 1000) / 1000))
    run()
    torch.cuda.synchronize()
    result: dict[str, Any] = {"requests": args.requests, "load_steps_s": steps}
    result |= timed(run, args.runs, args.freeze_gc)
    if args.tower_ab:
        result["tower_ab"] = tower_ab(run, args.runs)
    if args.graph_ab:
        result["graph_ab"] = graph_ab(run, args.runs, plan)
    if args.gemm_ab:
        result["gemm_ab"] = gemm_ab(run, args.runs, plan, model)
    if args.projections_ab:
        result["projections_ab"] = projections_ab(run, args.runs, plan)
    if args.rotary_ab:
        result["rotary_ab"] = rotary_ab(run, args.runs, plan)
    if args.store_ab:
        result["store_ab"] = store_ab(run, args.runs)
    if args.no_trace:
        engine.unload()
        return result
    from torch.profiler import ProfilerActivity, profile

    saved = annotated(model)
    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=True) as prof:
            run()
            torch.cuda.synchronize()
    finally:
        restore(saved)
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        prof.export_chrome_trace(f.name)
        trace = json.loads(Path(f.name).read_text())
    result |= analyse(trace)
    result["synchronising_lines"] = synchronising_lines(run)
    result["host_profile"] = host_profile(run)
    engine.unload()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    add_conversation_arguments(parser)
    parser.add_argument("--quantization", action="append", choices=["bf16", "8bit", "4bit"])
    parser.add_argument("--requests", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5, help="timed prefills (the median and each run are given)")
    parser.add_argument("--freeze-gc", action="store_true", help="gc.freeze() after the warm-up, as a test")
    parser.add_argument("--no-trace", action="store_true", help="the timings alone")
    parser.add_argument("--tower-ab", action="store_true", help="the vision tower with and without transformers' masks")
    parser.add_argument("--graph-ab", action="store_true", help="the mask-free vision tower eager and from graphs")
    parser.add_argument("--gemm-ab", action="store_true", help="the float32-compute layers' GEMM dtypes (4-bit)")
    parser.add_argument("--projections-ab", action="store_true", help="q/k/v and gate/up grouped, then alone")
    parser.add_argument("--rotary-ab", action="store_true", help="the rotary embedding fused, then transformers'")
    parser.add_argument(
        "--store-ab",
        action="store_true",
        help="with --admission: the slots' stores and moves for all layers at once, then per layer",
    )
    parser.add_argument(
        "--admission",
        action="store_true",
        help="time and trace the worker's whole path for --requests one-token requests instead",
    )
    parser.add_argument("--out")
    args = parser.parse_args()
    messages, images = conversation(args)
    results: dict[str, Any] = {"device": torch.cuda.get_device_name(0)}
    for quantization in args.quantization or ["bf16"]:
        results[quantization] = timeline_one(args, quantization, messages, images)
        print(quantization, json.dumps(results[quantization])[:3000], file=sys.stderr, flush=True)
        gc.collect()
        torch.cuda.empty_cache()
    text = json.dumps(results, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
