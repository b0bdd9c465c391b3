#!/usr/bin/env python3
"""The blog's Idefics2 program (see shared/DESIGN.md), reading its inputs from arguments.

Changes from the blog, all forced by transformers 5 or by this environment:
  - AutoModelForVision2Seq -> AutoModelForImageTextToText;
  - load_in_8bit=True / load_in_4bit=True -> quantization_config=BitsAndBytesConfig(...);
  - without torchvision, transformers 5.17 cannot load the (PIL) Idefics2 image processor through AutoProcessor
    (it marks the PIL class as needing torchvision), so the real PIL class is exposed first;
  - on CPUs with AVX512-BF16, bitsandbytes 0.50.2 repacks 4-bit weights at their first CPU forward and fails on
    layers whose width is not a multiple of its 64-weight block (idefics2-8b's vision MLP: 4,304), so 4-bit
    layers keep the portable CPU path every other CPU takes (the worker does the same).

Usage:
  python scripts/reference/reference.py --model assets/tiny-idefics2 --messages assets/demo/conversation.json \
      --image assets/demo/first.png --image assets/demo/second.jpg [--quantization none|8bit|4bit] \
      [--max-new-tokens 500] [--no-image-splitting]
Prints one JSON object on stdout: {"tokenIds": [...generated ids...], "text": "...", "fullText": "..."}.
"""

import argparse
import contextlib
import json
import sys

from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig
from transformers.image_utils import load_image
from transformers.utils import is_torchvision_available

if not is_torchvision_available():
    import transformers.models.idefics2 as idefics2_module
    from transformers.models.idefics2.image_processing_pil_idefics2 import (
        Idefics2ImageProcessorPil,
    )

    idefics2_module.Idefics2ImageProcessorPil = Idefics2ImageProcessorPil

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--messages", required=True)
parser.add_argument("--image", action="append", default=[])
parser.add_argument("--quantization", choices=["none", "8bit", "4bit"], default="none")
parser.add_argument("--max-new-tokens", type=int, default=500)
parser.add_argument("--no-image-splitting", action="store_true")
args = parser.parse_args()

with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON result
    images = [load_image(source) for source in args.image]
    processor_kwargs = {"do_image_splitting": False} if args.no_image_splitting else {}
    processor = AutoProcessor.from_pretrained(args.model, **processor_kwargs)
    quantization = {
        "none": None,
        "8bit": BitsAndBytesConfig(load_in_8bit=True),
        "4bit": BitsAndBytesConfig(load_in_4bit=True),
    }[args.quantization]
    model_kwargs = {"quantization_config": quantization} if quantization else {}
    model = AutoModelForImageTextToText.from_pretrained(args.model, device_map="auto", **model_kwargs)
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False

    with open(args.messages, encoding="utf-8") as f:
        messages = json.load(f)
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=prompt, images=images or None, return_tensors="pt")
    inputs = {k: v.to(model.device) for k, v in inputs.items()}

    generated_ids = model.generate(**inputs, max_new_tokens=args.max_new_tokens)
    prompt_len = inputs["input_ids"].shape[1]
    result = {
        "tokenIds": generated_ids[0, prompt_len:].tolist(),
        "text": processor.batch_decode(generated_ids[:, prompt_len:], skip_special_tokens=True)[0],
        "fullText": processor.batch_decode(generated_ids, skip_special_tokens=True)[0],
    }

print(json.dumps(result))
