"""One `generate` request: the reference's processor and model.generate calls, plus streaming and cancel."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
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


def aborted() -> WorkerError:
    return WorkerError("ABORTED", "The generation was cancelled")


def finish_reason(ids: list[int], eos_ids: list[int], text: str, stop_strings: Any, limit: int | None) -> str:
    if ids and ids[-1] in eos_ids:
        return "stop"
    if stop_strings and (any(text.endswith(s) for s in stop_strings) or (limit is not None and len(ids) < limit)):
        return "stop_string"
    return "length"


@dataclass
class PreparedPrompt:
    """The processor's output for one request, with the counts and times every result reports."""

    inputs: Any
    prompt_tokens: int
    image_tokens: int
    started: float
    preprocessed: float


def prepare_prompt(engine: Engine, params: GenerateParams, payload: bytes) -> PreparedPrompt:
    """The reference's chat template and processor calls, plus the checks that give clear errors."""
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
    return PreparedPrompt(inputs, prompt_tokens, image_tokens, started, time.perf_counter())


def generation_result(  # noqa: PLR0917 - one result, built from each of its parts
    prepared: PreparedPrompt,
    ids: list[int],
    text: str,
    finish_reason: str,
    first_step_at: float,
    finished: float,
) -> dict[str, Any]:
    decode_seconds = finished - first_step_at
    return {
        "text": text,
        "tokenIds": ids,
        "finishReason": finish_reason,
        "usage": {
            "promptTokens": prepared.prompt_tokens,
            "imageTokens": prepared.image_tokens,
            "completionTokens": len(ids),
            "totalTokens": prepared.prompt_tokens + len(ids),
        },
        "timings": {
            "preprocessMs": _ms(prepared.preprocessed - prepared.started),
            "prefillMs": _ms(first_step_at - prepared.preprocessed),
            "decodeMs": _ms(decode_seconds),
            "totalMs": _ms(finished - prepared.started),
            "decodeTokensPerSecond": round((len(ids) - 1) / decode_seconds, 3)
            if len(ids) > 1 and decode_seconds > 0
            else 0.0,
        },
    }


def run_generation(
    engine: Engine, params: GenerateParams, payload: bytes, on_token: OnToken, cancel: threading.Event
) -> dict[str, Any]:
    model, processor = engine.model, engine.processor
    prepared = prepare_prompt(engine, params, payload)
    kwargs = dict(params.generate_kwargs)
    kwargs["eos_token_id"] = list(engine.eos_ids)
    if "stop_strings" in kwargs:
        kwargs["tokenizer"] = processor.tokenizer
    timer = _TimedCancel(cancel)
    kwargs["stopping_criteria"] = StoppingCriteriaList([timer])
    beams = int(kwargs.get("num_beams") or model.generation_config.num_beams or 1) > 1
    decode = text_decoder(processor)
    streamer = TokenStreamer(decode, on_token, cancel) if params.stream and not beams else None
    if streamer is not None:
        kwargs["streamer"] = streamer
    if params.seed is not None:
        torch.manual_seed(params.seed)
    if cancel.is_set():
        raise aborted()

    with fastest_attention(model):
        output = model.generate(**prepared.inputs, **kwargs)
    finished = time.perf_counter()
    if cancel.is_set():
        raise aborted()

    ids = [int(i) for i in output[0, prepared.prompt_tokens :].tolist()]
    text = decode(ids)
    if streamer is not None:
        rest = streamer.finish(text)
        if rest:
            on_token(rest, [])
    elif params.stream:
        on_token(text, ids)
    reason = finish_reason(ids, engine.eos_ids, text, kwargs.get("stop_strings"), kwargs.get("max_new_tokens"))
    return generation_result(prepared, ids, text, reason, timer.first_step_at or finished, finished)


def text_decoder(processor: Any) -> Callable[[list[int]], str]:
    def decode(ids: list[int]) -> str:
        return processor.batch_decode([ids], skip_special_tokens=True)[0]

    return decode


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
