"""One `generate` request: the reference's processor and model.generate calls, plus streaming and cancel."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from transformers.generation.stopping_criteria import StoppingCriteriaList

from .attention import fastest_attention
from .errors import WorkerError
from .params import GenerateParams
from .streaming import CancelCriteria, OnToken, TokenStreamer

if TYPE_CHECKING:
    from .engine import Engine


class _TimedCancel(CancelCriteria):
    """The cancel check, which also notes when the first new token exists (it runs once per step)."""

    def __init__(self, cancel: threading.Event) -> None:
        super().__init__(cancel)
        self.first_step_at: float | None = None

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        if self.first_step_at is None:
            self.first_step_at = time.perf_counter()
        return super().__call__(input_ids, scores, **kwargs)


def _images(params: GenerateParams, payload: bytes) -> list[Image.Image]:
    view = memoryview(payload)
    return [
        Image.frombytes("RGB", (spec.width, spec.height), bytes(view[spec.offset : spec.offset + spec.length]))
        for spec in params.images
    ]


def _check_splittable(processor: Any, params: GenerateParams) -> None:
    """Refuses 1-pixel-tall images when splitting is on: transformers' split gives 0-pixel-tall crops and fails
    with ZeroDivisionError (the reference fails the same way), so the caller gets a clear error instead."""
    if not getattr(processor.image_processor, "do_image_splitting", False):
        return
    for index, spec in enumerate(params.images):
        if spec.height < 2:
            raise WorkerError(
                "IMAGE_UNREADABLE",
                f"Image {index + 1} is {spec.width}x{spec.height} pixels: with image splitting on, the Idefics2 "
                "processor cannot take an image less than 2 pixels tall (its crops would be 0 pixels tall)",
                "Pad the image to at least 2 pixels tall, or load the model with imageSplitting false.",
            )


def _aborted() -> WorkerError:
    return WorkerError("ABORTED", "The generation was cancelled")


def _finish_reason(ids: list[int], eos_ids: list[int], text: str, kwargs: dict[str, Any], limit: int | None) -> str:
    if ids and ids[-1] in eos_ids:
        return "stop"
    stop_strings = kwargs.get("stop_strings")
    if stop_strings and (any(text.endswith(s) for s in stop_strings) or (limit is not None and len(ids) < limit)):
        return "stop_string"
    return "length"


def run_generation(
    engine: Engine, params: GenerateParams, payload: bytes, on_token: OnToken, cancel: threading.Event
) -> dict[str, Any]:
    model, processor = engine.model, engine.processor
    started = time.perf_counter()
    _check_splittable(processor, params)
    images = _images(params, payload)
    prompt = processor.apply_chat_template(params.messages, add_generation_prompt=True)
    inputs = processor(text=prompt, images=images or None, return_tensors="pt").to(model.device)
    input_ids = inputs["input_ids"]
    prompt_tokens = int(input_ids.shape[-1])
    max_context = int(model.config.text_config.max_position_embeddings)
    if prompt_tokens >= max_context:
        raise WorkerError(
            "CONTEXT_OVERFLOW",
            f"The prompt is {prompt_tokens} tokens but the model's context is {max_context} tokens",
            "Send fewer or smaller images (doImageSplitting false, a smaller longestEdge) or a shorter conversation.",
        )
    image_tokens = int((input_ids == int(model.config.image_token_id)).sum())
    preprocessed = time.perf_counter()

    kwargs = dict(params.generate_kwargs)
    kwargs["eos_token_id"] = list(engine.eos_ids)
    if "stop_strings" in kwargs:
        kwargs["tokenizer"] = processor.tokenizer
    timer = _TimedCancel(cancel)
    kwargs["stopping_criteria"] = StoppingCriteriaList([timer])
    beams = int(kwargs.get("num_beams") or model.generation_config.num_beams or 1) > 1
    decode = _decoder(processor)
    streamer = TokenStreamer(decode, on_token, cancel) if params.stream and not beams else None
    if streamer is not None:
        kwargs["streamer"] = streamer
    if params.seed is not None:
        torch.manual_seed(params.seed)
    if cancel.is_set():
        raise _aborted()

    with fastest_attention(model):
        output = model.generate(**inputs, **kwargs)
    finished = time.perf_counter()
    if cancel.is_set():
        raise _aborted()

    ids = [int(i) for i in output[0, prompt_tokens:].tolist()]
    text = processor.batch_decode([ids], skip_special_tokens=True)[0]
    if streamer is not None:
        rest = streamer.finish(text)
        if rest:
            on_token(rest, [])
    elif params.stream:
        on_token(text, ids)

    first = timer.first_step_at or finished
    decode_seconds = finished - first
    return {
        "text": text,
        "tokenIds": ids,
        "finishReason": _finish_reason(ids, engine.eos_ids, text, kwargs, kwargs.get("max_new_tokens")),
        "usage": {
            "promptTokens": prompt_tokens,
            "imageTokens": image_tokens,
            "completionTokens": len(ids),
            "totalTokens": prompt_tokens + len(ids),
        },
        "timings": {
            "preprocessMs": _ms(preprocessed - started),
            "prefillMs": _ms(first - preprocessed),
            "decodeMs": _ms(decode_seconds),
            "totalMs": _ms(finished - started),
            "decodeTokensPerSecond": round((len(ids) - 1) / decode_seconds, 3)
            if len(ids) > 1 and decode_seconds > 0
            else 0.0,
        },
    }


def _decoder(processor: Any) -> Any:
    def decode(ids: list[int]) -> str:
        return processor.batch_decode([ids], skip_special_tokens=True)[0]

    return decode


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
