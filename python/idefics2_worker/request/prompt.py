"""A request's prompt: the reference's chat template and processor calls, plus the checks that give clear errors."""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..protocol.errors import WorkerError
from ..protocol.params import GenerateParams
from .cancellation import stop_if_cancelled
from .loaded_model import LoadedModel


@dataclass(frozen=True)
class PreparedPrompt:
    """The processor's output for one request, with the counts and times every result reports."""

    inputs: Any
    prompt_tokens: int
    image_tokens: int
    started: float
    preprocessed: float


def _pil_images(params: GenerateParams, payload: bytes) -> list[Image.Image]:
    """The pictures as the reference passes them: PIL images (each copies its pixels out of the payload once)."""
    view = memoryview(payload)
    return [
        Image.frombytes("RGB", (spec.width, spec.height), view[spec.offset : spec.offset + spec.length])
        for spec in params.images
    ]


def _tensor_images(params: GenerateParams, payload: bytes) -> list[Any]:
    """The pictures as uint8 channel-first tensors over the payload itself, no copy: the same shape, strides and
    values the torchvision backend makes of a PIL image (`pil_to_tensor`), without its copies (PIL's, `load_image`'s
    exif_transpose and convert("RGB"), numpy's), so everything after them is the same computation."""
    import torch

    view = memoryview(payload)
    with warnings.catch_warnings():
        # The payload is read-only bytes: the processor only reads these tensors (its first step copies them to the
        # device), so torch's warning about writing to a read-only buffer does not apply.
        warnings.simplefilter("ignore", UserWarning)
        return [
            torch.frombuffer(view[spec.offset : spec.offset + spec.length], dtype=torch.uint8)
            .view(spec.height, spec.width, 3)
            .permute(2, 0, 1)
            for spec in params.images
        ]


def _processor_inputs(processor: Any, prompt: str, params: GenerateParams, payload: bytes, device: Any) -> Any:
    """The processor's inputs for the prompt and pictures; with `device`, the pictures are preprocessed there.

    On a device the text goes through the processor alone (its own `<image>` expansion and tokenizer, which do not
    depend on the pixels) and the pictures through its image processor as tensors: Idefics2's processor takes PIL
    images only, and would copy each picture four times on the CPU before the image processor moves it anyway.
    """
    if device is None or not params.images:
        images = _pil_images(params, payload)
        return processor(text=prompt, images=images or None, return_tensors="pt")
    from transformers import BatchFeature

    text = processor(text=prompt, return_tensors="pt")
    pixels = processor.image_processor([_tensor_images(params, payload)], return_tensors="pt", device=device)
    return BatchFeature({**text, **pixels})


def _processes_on_device(processor: Any) -> bool:
    """Whether the image processor is transformers' torchvision backend, which can preprocess on the GPU."""
    try:
        from transformers.image_processing_backends import TorchvisionBackend
    except ImportError:
        return False
    return isinstance(getattr(processor, "image_processor", None), TorchvisionBackend)


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


_OVERFLOW_FIX = (
    "Send fewer or smaller images (doImageSplitting false, a smaller longestEdge) or a shorter conversation."
)
# Per tokenizer: the most characters one token can stand for.
_longest_token: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def _longest_token_chars(tokenizer: Any) -> int:
    """The longest token's text, in characters: a byte-level token stands for at most as many bytes as its
    vocabulary entry has characters, a sentencepiece one for its piece, a byte-fallback one for one byte."""
    try:
        return _longest_token[tokenizer]
    except (KeyError, TypeError):
        pass
    pieces = [*tokenizer.get_vocab(), *getattr(tokenizer, "added_tokens_encoder", {})]
    longest = max((len(piece) for piece in pieces), default=1)
    with contextlib.suppress(TypeError):  # a tokenizer that cannot be weakly referenced is measured each time
        _longest_token[tokenizer] = longest
    return longest


def _check_text_fits(loaded: LoadedModel, prompt: str, max_context: int) -> None:
    """Refuses a prompt whose text alone is more tokens than the context, before tokenizing it: tokenizing 15 MB
    takes many seconds (and a cancel cannot stop it), while the least number of tokens it can be is its
    length over the longest token's. So tokenizing never works on more than the context's worth of text."""
    tokenizer = loaded.processor.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return
    longest = _longest_token_chars(tokenizer)
    if len(prompt) < max_context * longest:
        return
    # Tokens cover the normalized text; a normalizer may change its length, so count that (a quick pass).
    normalizer = backend.normalizer
    chars = len(normalizer.normalize_str(prompt)) if normalizer is not None else len(prompt)
    least = -(-chars // longest)
    if least >= max_context:
        raise WorkerError(
            "CONTEXT_OVERFLOW",
            f"The prompt is at least {least} tokens ({chars} characters) "
            f"but the model's context is {max_context} tokens",
            _OVERFLOW_FIX,
        )


def _check_answer_fits(prompt_tokens: int, max_new_tokens: int, max_context: int) -> None:
    """CONTEXT_OVERFLOW when the prompt and the longest answer asked for together pass the context."""
    if prompt_tokens + max_new_tokens <= max_context:
        return
    left = max_context - prompt_tokens
    raise WorkerError(
        "CONTEXT_OVERFLOW",
        f"This turn needs {prompt_tokens + max_new_tokens} tokens ({prompt_tokens} of conversation and up to "
        f"{max_new_tokens} new) but the model's context is {max_context} tokens: {left} are left for the answer",
        f"Lower maxNewTokens to at most {left}, or start again with a shorter history (reset(), or fewer turns)."
        if left > 0
        else _OVERFLOW_FIX,
    )


def prepare_prompt(
    loaded: LoadedModel,
    params: GenerateParams,
    payload: bytes,
    cancel: threading.Event | None = None,
    on_device: bool = False,
) -> PreparedPrompt:
    """The processor's inputs for a request, checking `cancel` between stages; CONTEXT_OVERFLOW past the context.

    With `on_device` (the fast decoder on CUDA) a torchvision image processor resizes, normalises and splits the
    pictures on the model's device instead of the CPU: the same operations, off the CPU's critical path.
    """
    model, processor = loaded.model, loaded.processor
    started = time.perf_counter()
    max_context = int(model.config.text_config.max_position_embeddings)
    _check_splittable(processor, params)
    on_device = on_device and bool(params.images) and _processes_on_device(processor)
    stop_if_cancelled(cancel)
    prompt = processor.apply_chat_template(params.messages, add_generation_prompt=True)
    _check_text_fits(loaded, prompt, max_context)
    stop_if_cancelled(cancel)
    device = model.device if on_device else None
    inputs = _processor_inputs(processor, prompt, params, payload, device)
    # Counted where the tokenizer made them (the host): on the device, reading the count would wait for the
    # pictures' preprocessing there, and the prefill's first kernels would start on an idle GPU.
    input_ids = inputs["input_ids"]
    image_tokens = int((input_ids == int(model.config.image_token_id)).sum())
    inputs = inputs.to(model.device)
    stop_if_cancelled(cancel)
    prompt_tokens = int(input_ids.shape[-1])
    if prompt_tokens >= max_context:
        raise WorkerError(
            "CONTEXT_OVERFLOW",
            f"The prompt is {prompt_tokens} tokens but the model's context is {max_context} tokens",
            _OVERFLOW_FIX,
        )
    if params.reserve_new_tokens:
        _check_answer_fits(prompt_tokens, int(params.generate_kwargs.get("max_new_tokens") or 0), max_context)
    return PreparedPrompt(inputs, prompt_tokens, image_tokens, started, time.perf_counter())
