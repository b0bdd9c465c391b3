"""A request's prompt: the reference's chat template and processor calls, plus the checks that give clear errors."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..protocol.errors import WorkerError
from ..protocol.params import GenerateParams
from .loaded_model import LoadedModel


@dataclass(frozen=True)
class PreparedPrompt:
    """The processor's output for one request, with the counts and times every result reports."""

    inputs: Any
    prompt_tokens: int
    image_tokens: int
    started: float
    preprocessed: float


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


def prepare_prompt(loaded: LoadedModel, params: GenerateParams, payload: bytes) -> PreparedPrompt:
    model, processor = loaded.model, loaded.processor
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
