"""The prefill's vision tower without padding computes what the padded one computes, and prompts prefilled together
each get what they get alone (the tiny model, CPU)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from conftest import TINY_MODEL
from demo_inputs import demo_images, demo_messages

from idefics2_worker.decode import prefill as prefill_module
from idefics2_worker.decode.prefill import (
    PrefillPlan,
    empty_cache,
    image_features_in_chunks,
    image_features_unpadded,
    image_features_unpadded_many,
    prefill,
    prefill_groups,
    prefill_many,
)


@pytest.fixture(scope="module")
def model_and_processor() -> tuple[Any, Any]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from idefics2_worker.engine.compat import expose_pil_image_processor

    expose_pil_image_processor()
    processor = AutoProcessor.from_pretrained(str(TINY_MODEL))
    model = AutoModelForImageTextToText.from_pretrained(str(TINY_MODEL)).eval()
    return model, processor


def processor_inputs(processor: Any, messages: list[dict[str, Any]], images: list[Any]) -> Any:
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(text=prompt, images=images or None, return_tensors="pt")


@pytest.fixture(scope="module")
def model_and_inputs(model_and_processor: tuple[Any, Any]) -> tuple[Any, Any]:
    model, processor = model_and_processor
    return model, processor_inputs(processor, demo_messages(), demo_images())


@pytest.fixture(scope="module")
def three_prompts(model_and_processor: tuple[Any, Any]) -> list[Any]:
    """Prompts of three lengths: the demo (two pictures), a question without one, a question on one picture."""
    _, processor = model_and_processor

    def question(text: str, pictures: int) -> list[dict[str, Any]]:
        return [{"role": "user", "content": [*([{"type": "image"}] * pictures), {"type": "text", "text": text}]}]

    return [
        processor_inputs(processor, demo_messages(), demo_images()),
        processor_inputs(processor, question("Say something about squares, please.", 0), []),
        processor_inputs(processor, question("What colour is this?", 1), demo_images()[1:]),
    ]


@torch.inference_mode()
def test_sub_images_cut_to_their_patches_give_the_padded_towers_features(model_and_inputs: tuple[Any, Any]) -> None:
    model, inputs = model_and_inputs
    pixels, mask = inputs["pixel_values"], inputs["pixel_attention_mask"]
    # The demo's two pictures with splitting: sub-images of several sizes, padded to the largest.
    sizes = {(int(m[:, 0].sum()), int(m[0, :].sum())) for m in mask[0]}
    assert len(sizes) > 1
    padded = image_features_in_chunks(model, pixels, mask, chunk=pixels.shape[1])
    for chunk in (1, 3, pixels.shape[1]):
        unpadded = image_features_unpadded(model, pixels, mask, chunk)
        assert unpadded is not None
        assert unpadded.shape == padded.shape
        torch.testing.assert_close(unpadded, padded, atol=2e-5, rtol=1e-4)


@torch.inference_mode()
def test_a_mask_that_is_not_a_top_left_rectangle_of_whole_patches_takes_the_padded_path(
    model_and_inputs: tuple[Any, Any],
) -> None:
    model, inputs = model_and_inputs
    pixels, mask = inputs["pixel_values"], inputs["pixel_attention_mask"].clone()
    mask[0, 0, 0, 0] = False  # a hole: not a rectangle
    assert image_features_unpadded(model, pixels, mask, chunk=4) is None
    tiny = torch.zeros_like(mask)
    tiny[:, :, :3, :3] = True  # less than one patch
    assert image_features_unpadded(model, pixels, tiny, chunk=4) is None
    assert image_features_unpadded(model, pixels, None, chunk=4) is None


@torch.inference_mode()
def test_an_unpadded_prefill_gives_the_padded_prefills_logits(model_and_inputs: tuple[Any, Any]) -> None:
    model, inputs = model_and_inputs
    _, padded = prefill(model, inputs, PrefillPlan(vision_chunk=None))
    _, unpadded = prefill(model, inputs, PrefillPlan(vision_chunk=None, unpadded_vision=True))
    torch.testing.assert_close(unpadded, padded, atol=1e-4, rtol=1e-4)
    assert int(unpadded.argmax()) == int(padded.argmax())


@torch.inference_mode()
def test_a_sliding_window_models_prefill_brings_its_windows_to_the_device_once_and_computes_the_same(
    model_and_inputs: tuple[Any, Any],
) -> None:
    model, inputs = model_and_inputs
    windowed = copy.deepcopy(model)
    windowed.config.text_config.sliding_window = 4096  # as idefics2-8b's Mistral; longer than the prompt
    first, second = empty_cache(windowed), empty_cache(windowed)
    windows = [layer._sliding_window_tensor for layer in first.layers]
    assert len(windows) == windowed.config.text_config.num_hidden_layers
    assert all(int(w) == 4096 and w.device == windowed.device for w in windows)
    # One tensor for every layer and prefill: nothing is copied to the device per layer.
    assert all(w is v for w, v in zip(windows, [layer._sliding_window_tensor for layer in second.layers], strict=True))
    cache, logits = prefill(windowed, inputs, PrefillPlan())
    own = windowed(**inputs, use_cache=True, logits_to_keep=1)
    torch.testing.assert_close(logits, own.logits[:, -1].float(), atol=0, rtol=0)
    assert cache.get_seq_length() == own.past_key_values.get_seq_length() == inputs["input_ids"].shape[1]


def test_on_cpu_the_fast_decoders_plan_is_the_reference_prefill(model_and_inputs: tuple[Any, Any]) -> None:
    model, _ = model_and_inputs
    assert PrefillPlan.fastest(model) == PrefillPlan()


@torch.inference_mode()
@pytest.mark.parametrize(
    "plan",
    [PrefillPlan(), PrefillPlan(vision_chunk=3, unpadded_vision=True)],
    ids=["padded vision", "unpadded vision in chunks of 3"],
)
def test_prompts_prefilled_together_each_get_the_cache_and_logits_they_get_alone(
    model_and_inputs: tuple[Any, Any], three_prompts: list[Any], plan: PrefillPlan
) -> None:
    model, _ = model_and_inputs
    lengths = [int(inputs["input_ids"].shape[-1]) for inputs in three_prompts]
    assert len(set(lengths)) == 3
    cache, logits, returned = prefill_many(model, three_prompts, plan)
    assert returned == lengths
    assert logits.dtype == torch.float32
    assert logits.shape == (3, model.config.text_config.vocab_size)
    for row, (inputs, length) in enumerate(zip(three_prompts, lengths, strict=True)):
        alone_cache, alone_logits = prefill(model, inputs, plan)
        torch.testing.assert_close(logits[row : row + 1], alone_logits, atol=1e-4, rtol=1e-4)
        assert int(logits[row].argmax()) == int(alone_logits.argmax())
        for layer, alone in zip(cache.layers, alone_cache.layers, strict=True):
            torch.testing.assert_close(layer.keys[row, :, :length], alone.keys[0], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(layer.values[row, :, :length], alone.values[0], atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_sub_images_of_one_size_from_several_requests_share_the_towers_calls(
    model_and_inputs: tuple[Any, Any], three_prompts: list[Any]
) -> None:
    model, _ = model_and_inputs
    pictures = [(p["pixel_values"], p["pixel_attention_mask"]) for p in (three_prompts[0], three_prompts[2])]
    calls: list[int] = []
    encoder = model.model.vision_model.encoder
    hook = encoder.register_forward_hook(lambda _m, _a, out: calls.append(len(out.last_hidden_state)))
    try:
        alone = [image_features_unpadded(model, values, mask, chunk=16) for values, mask in pictures]
        calls_alone = len(calls)
        calls.clear()
        together = image_features_unpadded_many(model, pictures, chunk=16)
    finally:
        hook.remove()
    # The one-picture request's picture is the demo's second: its crops have sizes the demo's have too.
    assert len(calls) < calls_alone
    assert sum(calls) == sum(int(values.shape[1]) for values, _ in pictures)
    for mine, reference in zip(together, alone, strict=True):
        assert mine is not None
        assert reference is not None
        torch.testing.assert_close(mine, reference, atol=2e-5, rtol=1e-4)


@torch.inference_mode()
def test_a_request_whose_mask_is_not_a_rectangle_takes_the_padded_path_alone(
    model_and_inputs: tuple[Any, Any], three_prompts: list[Any]
) -> None:
    model, _ = model_and_inputs
    holed = dict(three_prompts[2])
    holed["pixel_attention_mask"] = holed["pixel_attention_mask"].clone()
    holed["pixel_attention_mask"][0, 0, 0, 0] = 0
    pictures = [(p["pixel_values"], p["pixel_attention_mask"]) for p in (three_prompts[0], holed)]
    found = image_features_unpadded_many(model, pictures, chunk=4)
    assert found[0] is not None
    assert found[1] is None
    prompts = [three_prompts[0], three_prompts[1], holed]
    _, logits, _ = prefill_many(model, prompts, PrefillPlan(vision_chunk=4, unpadded_vision=True))
    _, alone = prefill(model, holed, PrefillPlan(vision_chunk=4))
    torch.testing.assert_close(logits[2:], alone, atol=1e-4, rtol=1e-4)


def test_prefill_groups_keep_the_order_and_stay_within_the_token_and_sub_image_bounds() -> None:
    def prompt(tokens: int, sub_images: int = 0) -> dict[str, torch.Tensor]:
        inputs = {"input_ids": torch.zeros(1, tokens, dtype=torch.long)}
        if sub_images:
            inputs["pixel_values"] = torch.zeros(1, sub_images, 3, 1, 1)
        return inputs

    tokens, sub_images = prefill_module.MAX_GROUP_TOKENS, prefill_module.MAX_GROUP_SUB_IMAGES
    assert prefill_groups([prompt(100), prompt(900, 10), prompt(50)]) == [[0, 1, 2]]
    # Padded rows count: four prompts of the longest's length.
    quarter = tokens // 4
    assert prefill_groups([prompt(10), prompt(10), prompt(10), prompt(quarter), prompt(10)]) == [[0, 1, 2, 3], [4]]
    assert prefill_groups([prompt(10), prompt(quarter + 1), prompt(10), prompt(10)]) == [[0, 1, 2], [3]]
    assert prefill_groups([prompt(tokens * 2), prompt(10)]) == [[0], [1]]
    half = sub_images // 2
    assert prefill_groups([prompt(10, half), prompt(10, half), prompt(10, 1), prompt(10)]) == [[0, 1], [2, 3]]
    assert prefill_groups([]) == []
