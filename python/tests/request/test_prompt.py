"""A request's prompt with the tiny model's real processor: a cancel stops it between stages, and text that cannot
fit the context is refused before the (slow, uninterruptible) tokenizer sees it."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import TINY_MODEL

from idefics2_worker.protocol.errors import WorkerError
from idefics2_worker.protocol.params import parse_generate
from idefics2_worker.request.loaded_model import LoadedModel
from idefics2_worker.request.prompt import prepare_prompt

MAX_CONTEXT = 4096


@pytest.fixture(scope="module")
def processor() -> Any:
    from transformers import AutoProcessor

    from idefics2_worker.engine.compat import expose_pil_image_processor

    expose_pil_image_processor()
    return AutoProcessor.from_pretrained(str(TINY_MODEL))


class CountingProcessor:
    """The real processor, counting its calls; `during_template` runs while the chat template is applied."""

    def __init__(self, real: Any, during_template: Any = None) -> None:
        self.real = real
        self.tokenizer = real.tokenizer
        self.image_processor = real.image_processor
        self.calls = 0
        self._during_template = during_template

    def apply_chat_template(self, *args: Any, **kwargs: Any) -> Any:
        if self._during_template:
            self._during_template()
        return self.real.apply_chat_template(*args, **kwargs)

    def __call__(self, **kwargs: Any) -> Any:
        self.calls += 1
        return self.real(**kwargs)


def loaded_with(processor: Any) -> LoadedModel:
    config = SimpleNamespace(text_config=SimpleNamespace(max_position_embeddings=MAX_CONTEXT), image_token_id=3)
    return LoadedModel(SimpleNamespace(config=config, device="cpu"), processor, (2,))


def params_for(*texts: str) -> Any:
    content = [{"type": "text", "text": text} for text in texts]
    raw = {"messages": [{"role": "user", "content": content}], "images": [], "options": {"maxNewTokens": 4}}
    return parse_generate(raw, 0)


def test_a_request_cancelled_before_it_starts_never_reaches_the_processor(processor: Any) -> None:
    counting = CountingProcessor(processor)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(WorkerError) as raised:
        prepare_prompt(loaded_with(counting), params_for("Hello"), b"", cancel)
    assert raised.value.code == "ABORTED"
    assert counting.calls == 0


def test_a_cancel_during_the_chat_template_stops_the_request_before_tokenizing(processor: Any) -> None:
    cancel = threading.Event()
    counting = CountingProcessor(processor, during_template=cancel.set)
    with pytest.raises(WorkerError) as raised:
        prepare_prompt(loaded_with(counting), params_for("Hello"), b"", cancel)
    assert raised.value.code == "ABORTED"
    assert counting.calls == 0


@pytest.mark.parametrize(
    ("what", "texts"),
    [
        ("one 15 MB text part", ["hello world " * 1_250_000]),
        ("many parts of 100 KB", ["abcdefghij" * 10_000] * 150),
        ("15 MB without a space", ["x" * 15_000_000]),
        ("15 MB of multi-byte characters", ["東京 🗼" * 3_000_000]),
    ],
)
def test_text_longer_than_the_context_can_hold_is_refused_at_once_without_tokenizing(
    processor: Any, what: str, texts: list[str]
) -> None:
    counting = CountingProcessor(processor)
    started = time.perf_counter()
    with pytest.raises(WorkerError) as raised:
        prepare_prompt(loaded_with(counting), params_for(*texts), b"")
    assert time.perf_counter() - started < 2.0, what
    assert raised.value.code == "CONTEXT_OVERFLOW"
    assert raised.value.message.startswith("The prompt is at least ")
    assert raised.value.message.endswith(f"but the model's context is {MAX_CONTEXT} tokens")
    assert counting.calls == 0


# "longest": the tokenizer's longest token itself, the text that packs the most characters into each token.
@pytest.mark.parametrize("unit", ["longest", "hello world ", "x", "東京 🗼", "<end_of_utterance>", "\n\n\t  "])
def test_the_bound_refuses_only_what_the_tokenizer_would_and_text_that_fits_is_tokenized(
    processor: Any, unit: str
) -> None:
    counting = CountingProcessor(processor)
    loaded = loaded_with(counting)
    from idefics2_worker.request.prompt import _longest_token_chars

    longest = _longest_token_chars(processor.tokenizer)
    if unit == "longest":
        pieces = [*processor.tokenizer.get_vocab(), *processor.tokenizer.added_tokens_encoder]
        unit = next(piece for piece in pieces if len(piece) == longest).replace("\u2581", " ")
    limit = MAX_CONTEXT * longest
    text = (unit * (limit // len(unit) + 2))[: limit + 10]
    prompt = processor.apply_chat_template(params_for(text).messages, add_generation_prompt=True)
    tokens = len(processor.tokenizer(prompt)["input_ids"])
    assert tokens >= MAX_CONTEXT  # so refusing it is right, whoever refuses
    with pytest.raises(WorkerError) as raised:
        prepare_prompt(loaded, params_for(text), b"")
    assert raised.value.code == "CONTEXT_OVERFLOW"
    short = unit * max(1, 200 // len(unit))
    prepared = prepare_prompt(loaded, params_for(short), b"")
    assert prepared.prompt_tokens < MAX_CONTEXT


def _turn(text: str, max_new_tokens: int, reserve: bool) -> Any:
    raw = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
        "images": [],
        "options": {"maxNewTokens": max_new_tokens},
        "reserveNewTokens": reserve,
    }
    return parse_generate(raw, 0)


def test_a_chat_turn_must_leave_room_for_its_longest_answer_and_says_what_it_needs_and_what_is_left(
    processor: Any,
) -> None:
    loaded = loaded_with(processor)
    prompt_tokens = prepare_prompt(loaded, _turn("Hello there", 1, reserve=False), b"").prompt_tokens
    left = MAX_CONTEXT - prompt_tokens
    assert prepare_prompt(loaded, _turn("Hello there", left, reserve=True), b"").prompt_tokens == prompt_tokens
    with pytest.raises(WorkerError) as raised:
        prepare_prompt(loaded, _turn("Hello there", left + 1, reserve=True), b"")
    assert raised.value.code == "CONTEXT_OVERFLOW"
    assert raised.value.message == (
        f"This turn needs {MAX_CONTEXT + 1} tokens ({prompt_tokens} of conversation and up to {left + 1} new) "
        f"but the model's context is {MAX_CONTEXT} tokens: {left} are left for the answer"
    )
    assert f"at most {left}" in (raised.value.fix or "")
    # A plain generate() only needs its prompt to fit, as the reference program does.
    assert prepare_prompt(loaded, _turn("Hello there", left + 1, reserve=False), b"").prompt_tokens == prompt_tokens


# Sizes that exercise the processor's corners: the blog's pictures, odd sizes, ones that need upscaling to the
# shortest edge, and 3-pixel sides, where a picture's channel axis is ambiguous from its shape alone.
PICTURE_PAIRS = [
    ((980, 735), (735, 980)),
    ((65, 33), (37, 100)),
    ((3, 5), (5, 3)),
    ((2, 2), (64, 3)),
    ((3, 64), (3, 3)),
]
CONVERSATION = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What do we see in this image?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "The Statue of Liberty."}]},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And this one?"}]},
]


def _pictures(sizes: tuple[tuple[int, int], ...]) -> tuple[bytes, list[Any]]:
    """A payload of random RGB pictures of these (width, height) sizes, and each picture as a PIL image."""
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(sum(w * h for w, h in sizes))
    pixels = [generator.integers(0, 256, (h, w, 3), dtype=np.uint8).tobytes() for w, h in sizes]
    pictures = [Image.frombytes("RGB", size, data) for size, data in zip(sizes, pixels, strict=True)]
    return b"".join(pixels), pictures


def _picture_params(sizes: tuple[tuple[int, int], ...], payload: bytes) -> Any:
    images, offset = [], 0
    for width, height in sizes:
        images.append({"offset": offset, "length": width * height * 3, "width": width, "height": height})
        offset += width * height * 3
    raw = {"messages": CONVERSATION, "images": images, "options": {"maxNewTokens": 4}}
    return parse_generate(raw, len(payload))


def _assert_same_inputs(got: Any, expected: Any) -> None:
    import torch

    assert sorted(got.keys()) == sorted(expected.keys())
    for key in expected:
        assert got[key].dtype == expected[key].dtype, key
        assert torch.equal(got[key], expected[key]), key


def _processor(splitting: bool, backend: str) -> Any:
    from transformers import AutoProcessor

    from idefics2_worker.engine.compat import expose_pil_image_processor

    expose_pil_image_processor()
    processor = AutoProcessor.from_pretrained(str(TINY_MODEL), do_image_splitting=splitting)
    is_torchvision = type(processor.image_processor).__name__ == "Idefics2ImageProcessor"
    if (backend == "torchvision") != is_torchvision:
        pytest.skip(f"the {backend} image processor is not the one that loads here")
    return processor


@pytest.mark.parametrize("splitting", [True, False])
@pytest.mark.parametrize("sizes", PICTURE_PAIRS)
def test_the_inputs_are_exactly_the_reference_processors_for_its_pil_images(
    sizes: tuple[tuple[int, int], ...], splitting: bool
) -> None:
    processor = _processor(splitting, "pil")
    payload, pictures = _pictures(sizes)
    prompt = processor.apply_chat_template(CONVERSATION, add_generation_prompt=True)
    expected = processor(text=prompt, images=pictures, return_tensors="pt")
    prepared = prepare_prompt(loaded_with(processor), _picture_params(sizes, payload), payload)
    _assert_same_inputs(prepared.inputs, expected)


@pytest.mark.parametrize("splitting", [True, False])
@pytest.mark.parametrize("sizes", PICTURE_PAIRS)
def test_pictures_preprocessed_on_the_device_are_exactly_what_the_processor_gives_for_pil_images_there(
    sizes: tuple[tuple[int, int], ...], splitting: bool
) -> None:
    """The torchvision backend (where it imports: the GPU machines) given tensors over the payload computes what
    the processor computes from the reference's PIL images, on the same device."""
    processor = _processor(splitting, "torchvision")
    payload, pictures = _pictures(sizes)
    prompt = processor.apply_chat_template(CONVERSATION, add_generation_prompt=True)
    loaded = loaded_with(processor)
    expected = processor(text=prompt, images=pictures, return_tensors="pt", device=loaded.model.device)
    prepared = prepare_prompt(loaded, _picture_params(sizes, payload), payload, on_device=True)
    _assert_same_inputs(prepared.inputs, expected)
