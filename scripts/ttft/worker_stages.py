"""The worker's host-side stages of a generate request, each timed alone on one request frame (written by
measure-ttft-host.mjs): reading the frame from a pipe, checking its params, the chat template, the whole
prepare_prompt (on CUDA as the fast decoder runs it, pictures preprocessed on the GPU), the reference's own processor
call on PIL images beside it, and encoding a result frame. Prints one JSON object of median/min/max milliseconds.

PYTHONPATH=python python scripts/ttft/worker_stages.py --model assets/tiny-idefics2 --frame FILE [--runs 20]
    [--longest-edge 980] [--device cpu|cuda] [--on-device]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from idefics2_worker.engine.loading import load_model
from idefics2_worker.protocol.framing import encode_header, read_frame
from idefics2_worker.protocol.params import parse_generate, parse_load
from idefics2_worker.request.prompt import prepare_prompt
from PIL import Image


def timed(
    runs: int, body: Callable[[], Any], sync: Callable[[], None]
) -> dict[str, float]:
    body()
    sync()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        body()
        sync()
        samples.append((time.perf_counter() - started) * 1000)
    return {
        "median": round(statistics.median(samples), 2),
        "min": round(min(samples), 2),
        "max": round(max(samples), 2),
    }


def read_through_a_pipe(frame_bytes: bytes) -> None:
    """One frame written into a pipe by another thread and read by read_frame, as the worker reads its stdin."""
    read_end, write_end = os.pipe()

    def write() -> None:
        with os.fdopen(write_end, "wb") as sink:
            sink.write(frame_bytes)

    writer = threading.Thread(target=write)
    writer.start()
    with os.fdopen(read_end, "rb") as source:
        read_frame(source)
    writer.join()


def reference_call(
    processor: Any, prompt: str, params: Any, payload: bytes, device: Any
) -> Any:
    """The reference program's processor call on PIL images made from the payload, for comparison."""
    images = [
        Image.frombytes(
            "RGB",
            (spec.width, spec.height),
            payload[spec.offset : spec.offset + spec.length],
        )
        for spec in params.images
    ]
    return processor(
        text=prompt,
        images=images,
        return_tensors="pt",
        **({"device": device} if device else {}),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--frame", required=True)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--longest-edge", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    # Preprocess the pictures on --device as the fast decoder does on CUDA (needs the torchvision image processor).
    parser.add_argument("--on-device", action="store_true")
    args = parser.parse_args()

    load = {
        "model": args.model,
        "deviceMap": args.device,
        "longestEdge": args.longest_edge,
    }
    loaded = load_model(parse_load(load), threading.Event(), lambda *_, **__: None)
    processor = loaded.processor
    with open(args.frame, "rb") as file:
        frame_bytes = file.read()
    frame = read_frame(io.BytesIO(frame_bytes))
    assert frame is not None
    header, payload = frame
    params = parse_generate(header["params"], len(payload))
    prompt = processor.apply_chat_template(params.messages, add_generation_prompt=True)
    on_device = args.on_device or args.device.startswith("cuda")
    device = loaded.model.device if on_device else None
    prepared = prepare_prompt(loaded, params, payload, on_device=on_device)
    import torch

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    result = {
        "type": "result",
        "id": 1,
        "result": {
            "text": "x",
            "tokenIds": [1],
            "promptTokens": prepared.prompt_tokens,
            "finishReason": "length",
        },
    }
    runs = args.runs
    stages = {
        "readFrameThroughPipeMs": timed(
            runs, lambda: read_through_a_pipe(frame_bytes), sync
        ),
        "parseGenerateMs": timed(
            runs, lambda: parse_generate(header["params"], len(payload)), sync
        ),
        "chatTemplateMs": timed(
            runs,
            lambda: processor.apply_chat_template(
                params.messages, add_generation_prompt=True
            ),
            sync,
        ),
        "preparePromptMs": timed(
            runs,
            lambda: prepare_prompt(loaded, params, payload, on_device=on_device),
            sync,
        ),
        "referenceProcessorCallMs": timed(
            runs,
            lambda: reference_call(processor, prompt, params, payload, device),
            sync,
        ),
        "encodeResultMs": timed(runs, lambda: encode_header(result), sync),
    }
    backend = type(processor.image_processor).__name__
    print(
        json.dumps(
            {
                "promptTokens": prepared.prompt_tokens,
                "imageProcessor": backend,
                "stages": stages,
            }
        )
    )


if __name__ == "__main__":
    main()
