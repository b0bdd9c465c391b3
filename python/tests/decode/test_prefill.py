"""The prefill's vision tower without padding computes what the padded one computes (the tiny model, CPU)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import TINY_MODEL
from demo_inputs import demo_images, demo_messages

from idefics2_worker.decode.prefill import (
    PrefillPlan,
    image_features_in_chunks,
    image_features_unpadded,
    prefill,
)


@pytest.fixture(scope="module")
def model_and_inputs() -> tuple[Any, Any]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from idefics2_worker.engine.compat import expose_pil_image_processor

    expose_pil_image_processor()
    processor = AutoProcessor.from_pretrained(str(TINY_MODEL))
    model = AutoModelForImageTextToText.from_pretrained(str(TINY_MODEL)).eval()
    prompt = processor.apply_chat_template(demo_messages(), add_generation_prompt=True)
    inputs = processor(text=prompt, images=demo_images(), return_tensors="pt")
    return model, inputs


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


def test_on_cpu_the_fast_decoders_plan_is_the_reference_prefill(model_and_inputs: tuple[Any, Any]) -> None:
    model, _ = model_and_inputs
    assert PrefillPlan.fastest(model) == PrefillPlan()
