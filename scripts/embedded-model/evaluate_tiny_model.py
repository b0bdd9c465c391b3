#!/usr/bin/env python3
"""Evaluate the tiny Idefics2 (assets/tiny-idefics2) the way users run it: AutoProcessor + AutoModelForImageTextToText,
chat template, greedy generate — unquantized, bitsandbytes 8-bit and 4-bit (fp4, the default), all on CPU.

On fresh seeded pictures (a different seed from training) it asks
  single: one picture + "What colour is the shape?"                       -> must name that colour;
  two:    the blog-shaped two-picture conversation ("...Which colour is that?") -> must name the LAST picture's colour;
each with image splitting on (the default) and off, and runs the demo conversation (assets/demo). An answer counts
as right when it names the right colour and no other, and generation stopped on <end_of_utterance>.

Usage: python scripts/embedded-model/evaluate_tiny_model.py --model assets/tiny-idefics2 --demo assets/demo
           [--n 50]
Takes about 1-3 minutes on 2 CPU cores. Exits 1 if any accuracy is below --min-accuracy (default 0.9).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.image_utils import load_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
from build_tiny_model import COLOURS, assistant, describe, draw_picture, user
from idefics2_worker.engine.compat import expose_pil_image_processor, portable_cpu_four_bit
from idefics2_worker.engine.quantization import quantization_config
from idefics2_worker.protocol.params import QUANT_MODES, Quantization

# transformers 5.17 wrongly marks the PIL Idefics2 image processor as needing torchvision; expose the real class.
expose_pil_image_processor()

# bitsandbytes logs on every int8 matmul that fp32 inputs are cast to fp16.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def load_kwargs(mode: str) -> dict:
    """As the blog loads it: BitsAndBytesConfig(load_in_8bit=True) or (load_in_4bit=True), fp4 being the default."""
    config = quantization_config(Quantization(mode=mode))
    return {"quantization_config": config} if config is not None else {}


def build_cases(n: int, seed: int) -> dict[str, list]:
    rng = random.Random(seed)
    single, two = [], []
    for _ in range(n):
        image, colour, _ = draw_picture(rng)
        single.append(([user("What colour is the shape?")], [image], colour))
    for _ in range(n):
        image1, colour1, shape1 = draw_picture(rng)
        image2, colour2, _ = draw_picture(rng, colour=rng.choice([c for c in COLOURS if c != colour1]))
        messages = [
            user("What do we see in this image?"),
            assistant(describe(colour1, shape1)),
            user("And how about this image? Which colour is that?"),
        ]
        two.append((messages, [image1, image2], colour2))
    return {"single": single, "two": two}


def answer(model, processor, messages, images, max_new_tokens: int = 24) -> tuple[str, bool]:
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=prompt, images=images or None, return_tensors="pt").to(model.device)
    with torch.inference_mode():
        generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_ids = generated[0, inputs["input_ids"].shape[1] :]
    stopped = int(new_ids[-1]) in set(model.generation_config.eos_token_id)
    return processor.batch_decode(new_ids[None], skip_special_tokens=True)[0], stopped


def is_right(text: str, colour: str, stopped: bool) -> bool:
    named = {c for c in COLOURS if c in text.lower()}
    return stopped and named == {colour}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/tiny-idefics2")
    parser.add_argument("--demo", default="assets/demo")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--seed", type=int, default=20240415)
    parser.add_argument("--modes", default="none,8bit,4bit")
    parser.add_argument("--min-accuracy", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--verbose", action="store_true", help="print every wrong answer")
    args = parser.parse_args()
    unknown = [mode for mode in args.modes.split(",") if mode not in QUANT_MODES]
    if unknown:
        parser.error(f"--modes: unknown {unknown}; expected some of {list(QUANT_MODES)}")
    torch.set_num_threads(args.threads)

    cases = build_cases(args.n, args.seed)
    demo = Path(args.demo)
    demo_messages = json.loads((demo / "conversation.json").read_text())
    demo_images = [load_image(str(demo / "first.png")), load_image(str(demo / "second.jpg"))]

    rows, demo_answers, failed = [], {}, False
    for mode in args.modes.split(","):
        started = time.time()
        model = AutoModelForImageTextToText.from_pretrained(args.model, device_map="cpu", **load_kwargs(mode))
        # As the worker and the reference program do: on AVX512-BF16 CPUs bitsandbytes' repacked 4-bit path
        # fails on the tiny model's layers ("shape '[128, 2]' is invalid"); every other CPU takes this path anyway.
        portable_cpu_four_bit(model)
        row = {"mode": mode}
        for splitting in (True, False):
            processor = AutoProcessor.from_pretrained(args.model, do_image_splitting=splitting)
            for task, items in cases.items():
                right = 0
                for messages, images, colour in items:
                    text, stopped = answer(model, processor, messages, images)
                    right += is_right(text, colour, stopped)
                    if not is_right(text, colour, stopped) and args.verbose:
                        where = f"{mode}, {task}, split={splitting}"
                        print(f"  wrong ({where}): want {colour}, got {text!r}", file=sys.stderr)
                accuracy = right / len(items)
                row[f"{task}/{'split' if splitting else 'nosplit'}"] = accuracy
                failed |= accuracy < args.min_accuracy
            text, stopped = answer(model, processor, demo_messages, demo_images)
            demo_answers[f"{mode}/{'split' if splitting else 'nosplit'}"] = text
            failed |= not is_right(text, "blue", stopped)
        row["seconds"] = round(time.time() - started, 1)
        rows.append(row)
        print(f"{mode}: {row}", file=sys.stderr, flush=True)

    columns = ["single/split", "two/split", "single/nosplit", "two/nosplit"]
    print(f"| quantization | {' | '.join(columns)} | seconds |")
    print(f"|---|{'---|' * len(columns)}---|")
    for row in rows:
        cells = " | ".join(f"{row[c]:.0%}" for c in columns)
        print(f"| {row['mode']} | {cells} | {row['seconds']} |")
    print(f"\n(n = {args.n} fresh pictures per cell; demo conversation answers below)")
    for key, text in demo_answers.items():
        print(f"  {key}: {text!r}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
