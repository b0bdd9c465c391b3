"""Teacher-forced figures of the fast decoder against the blog's program, for `idefics2 parity` (GPU method).

Free-running greedy tokens of two valid kernels part at the first near-tie, so the fast decoder is judged on the
reference's own tokens, as scripts/gpu/gpu_parity.py does: the model, loaded as scripts/reference/reference.py
loads it, is fed those tokens step by step with PyTorch's default attention (the reference), with the math kernel
(another valid kernel: its spread from the reference is the precision's noise) and through the worker's fast path
(`fast_path_logits`). Prints one JSON object with each step's figures; the SDK judges them
(src/parity/judge-teacher-forcing.ts), so the thresholds live in one place.

Usage: python -m idefics2_worker.engine.teacher_forced_parity --model DIR --messages FILE.json [--image A]...
           --tokens 400,358,356 [--quantization none|8bit|4bit] [--no-image-splitting]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Callable
from typing import Any


def forced_logits(model: Any, inputs: Any, tokens: list[int], context: Callable[[], Any]) -> Any:
    """Float32 logits for each generated position, feeding the reference's tokens one step at a time."""
    import torch

    with torch.no_grad(), context():
        out = model(**inputs, use_cache=True)
        cache, mask = out.past_key_values, inputs["attention_mask"]
        rows = [out.logits[:, -1].float()]
        for token in tokens[:-1]:
            step = torch.tensor([[token]], device=model.device)
            mask = torch.cat([mask, torch.ones_like(step)], dim=1)
            out = model(input_ids=step, attention_mask=mask, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            rows.append(out.logits[:, -1].float())
    return torch.cat(rows)


def _finite(value: float) -> float | None:
    # JSON has no NaN or infinity: a broken step is reported as null, which the SDK judges as a failure.
    return value if math.isfinite(value) else None


def step_figures(reference: Any, candidate: Any, noise: Any) -> list[dict[str, Any]]:
    """Per step: the reference's top-1 and top-1/top-2 margin, the fast path's top-1 and error, the kernel noise."""
    top2 = reference.topk(2, dim=-1)
    error = (candidate - reference).abs()
    relative = (candidate - reference).norm(dim=-1) / reference.norm(dim=-1)
    return [
        {
            "referenceTop1": int(top2.indices[step, 0]),
            "referenceMargin": _finite(float(top2.values[step, 0] - top2.values[step, 1])),
            "fastTop1": int(candidate[step].argmax()),
            "fastMaxAbsErr": _finite(float(error[step].max())),
            "fastRelErr": _finite(float(relative[step])),
            "noiseMaxAbsErr": _finite(float((noise[step] - reference[step]).abs().max())),
        }
        for step in range(reference.shape[0])
    ]


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    # The reference program's calls (device_map="auto", the blog's BitsAndBytesConfig), so both judge one model.
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

    from .compat import expose_pil_image_processor, portable_cpu_four_bit, quiet_int8_cast_notice

    expose_pil_image_processor()
    quiet_int8_cast_notice()
    processor_kwargs = {"do_image_splitting": False} if args.no_image_splitting else {}
    processor = AutoProcessor.from_pretrained(args.model, **processor_kwargs)
    quantization = {
        "none": None,
        "8bit": BitsAndBytesConfig(load_in_8bit=True),
        "4bit": BitsAndBytesConfig(load_in_4bit=True),
    }[args.quantization]
    model_kwargs = {"quantization_config": quantization} if quantization else {}
    model = AutoModelForImageTextToText.from_pretrained(args.model, device_map="auto", **model_kwargs)
    portable_cpu_four_bit(model)
    return model, processor


def run(args: argparse.Namespace) -> dict[str, Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from transformers.image_utils import load_image

    from ..decode.teacher_forcing import fast_path_logits

    tokens = [int(token) for token in args.tokens.split(",") if token.strip()]
    if not tokens:
        raise SystemExit("teacher_forced_parity: --tokens needs at least one token id")
    model, processor = _load(args)
    images = [load_image(source) for source in args.image]
    with open(args.messages, encoding="utf-8") as f:
        messages = json.load(f)
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=prompt, images=images or None, return_tensors="pt")
    inputs = {k: v.to(model.device) for k, v in inputs.items()}

    reference = forced_logits(model, inputs, tokens, contextlib.nullcontext)
    noise = forced_logits(model, inputs, tokens, lambda: sdpa_kernel([SDPBackend.MATH]))
    fast = fast_path_logits(model, inputs, tokens)
    return {
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "tokenIds": tokens,
        "steps": step_figures(reference, fast, noise),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m idefics2_worker.engine.teacher_forced_parity")
    parser.add_argument("--model", required=True)
    parser.add_argument("--messages", required=True)
    parser.add_argument("--image", action="append", default=[])
    parser.add_argument("--tokens", required=True, help="the reference's generated ids, comma-separated")
    parser.add_argument("--quantization", choices=["none", "8bit", "4bit"], default="none")
    parser.add_argument("--no-image-splitting", action="store_true")
    args = parser.parse_args()
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON result
        result = run(args)
    print(json.dumps(result, allow_nan=False))


if __name__ == "__main__":
    main()
