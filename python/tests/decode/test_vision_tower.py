"""The vision tower run without masks gives get_image_features' features bit for bit, where it applies (the tiny
model, CPU)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from conftest import TINY_MODEL
from demo_inputs import demo_images, demo_messages

from idefics2_worker.decode import prefill as prefill_module
from idefics2_worker.decode import vision_tower
from idefics2_worker.decode.prefill import image_features_in_chunks, image_features_unpadded
from idefics2_worker.decode.vision_tower import runs_without_masks, whole_patch_features


def load(attention: str) -> Any:
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(str(TINY_MODEL), attn_implementation=attention).eval()


@pytest.fixture(scope="module")
def inputs() -> Any:
    from transformers import AutoProcessor

    from idefics2_worker.engine.compat import expose_pil_image_processor

    expose_pil_image_processor()
    processor = AutoProcessor.from_pretrained(str(TINY_MODEL))
    prompt = processor.apply_chat_template(demo_messages(), add_generation_prompt=True)
    return processor(text=prompt, images=demo_images(), return_tensors="pt")


def whole_patch_groups(inputs: Any, patch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The demo's sub-images cut to their whole patches, grouped by size: (pixels [n, 3, H, W], masks [n, H, W])."""
    pixels, masks = inputs["pixel_values"][0], inputs["pixel_attention_mask"][0].bool()
    groups: dict[tuple[int, int], list[int]] = {}
    for index, mask in enumerate(masks):
        rows, cols = int(mask[:, 0].sum()) // patch * patch, int(mask[0, :].sum()) // patch * patch
        groups.setdefault((rows, cols), []).append(index)
    return [
        (pixels[members, :, :rows, :cols], masks[members, :rows, :cols]) for (rows, cols), members in groups.items()
    ]


@torch.inference_mode()
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_whole_patch_features_are_get_image_features_bit_for_bit(inputs: Any, attention: str) -> None:
    model = load(attention)
    assert runs_without_masks(model)
    groups = whole_patch_groups(inputs, int(model.config.vision_config.patch_size))
    assert len(groups) > 1  # crops and whole pictures: several grid sizes
    latents = int(model.config.perceiver_config.resampler_n_latents)
    for pixels, masks in groups:
        theirs = model.model.get_image_features(pixels.unsqueeze(0), masks.unsqueeze(0)).pooler_output
        mine = whole_patch_features(model, pixels)
        assert mine.shape == (len(pixels) * latents, model.config.text_config.hidden_size)
        torch.testing.assert_close(mine, theirs, atol=0, rtol=0)


@torch.inference_mode()
def test_the_residual_stream_is_contiguous_in_every_encoder_layer() -> None:
    # transformers' own embeddings leave it in the convolution's layout, a transposed view; every residual add and
    # layer norm then reads strided memory, a third of the tower's time on an H200 (docs/BENCHMARKS.md).
    model = load("sdpa")
    layouts: list[bool] = []
    for layer in model.model.vision_model.encoder.layers:
        layer.register_forward_hook(lambda _module, _args, out: layouts.append(out[0].is_contiguous()))
    patch = int(model.config.vision_config.patch_size)
    whole_patch_features(model, torch.randn(2, 3, 3 * patch, 2 * patch))
    assert layouts == [True] * len(model.model.vision_model.encoder.layers)


@torch.inference_mode()
def test_position_ids_are_made_once_per_grid_and_are_the_embeddings_own(inputs: Any) -> None:
    model = load("sdpa")
    embeddings = model.model.vision_model.embeddings
    side = int(embeddings.num_patches_per_side)
    first = vision_tower._position_ids(side, 3, 5, torch.float32, torch.device("cpu"))
    assert vision_tower._position_ids(side, 3, 5, torch.float32, torch.device("cpu")) is first
    # The embeddings' own ids, read through their position embedding: a grid with one row and column of padding.
    pixels = torch.randn(1, 3, 4 * embeddings.patch_size, 6 * embeddings.patch_size)
    mask = torch.zeros(1, 4, 6, dtype=torch.bool)
    mask[:, :3, :5] = True
    padded = embeddings(pixel_values=pixels, patch_attention_mask=mask).view(4, 6, -1)[:3, :5].reshape(15, -1)
    patch_part = embeddings.patch_embedding(pixels).flatten(2).transpose(1, 2).view(4, 6, -1)[:3, :5].reshape(15, -1)
    torch.testing.assert_close(patch_part + embeddings.position_embedding(first[0]), padded, atol=0, rtol=0)


def test_other_attention_implementations_keep_transformers_masks() -> None:
    model = load("sdpa")
    changed = copy.deepcopy(model)
    changed.config.vision_config._attn_implementation = "flex_attention"
    assert runs_without_masks(model)
    assert not runs_without_masks(changed)


@torch.inference_mode()
def test_without_the_mask_free_tower_the_unpadded_path_still_gives_the_padded_features(
    inputs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load("sdpa")
    pixels, mask = inputs["pixel_values"], inputs["pixel_attention_mask"]
    padded = image_features_in_chunks(model, pixels, mask, chunk=pixels.shape[1])
    monkeypatch.setattr(prefill_module, "runs_without_masks", lambda _model: False)
    found = image_features_unpadded(model, pixels, mask, chunk=pixels.shape[1])
    assert found is not None
    torch.testing.assert_close(found, padded, atol=2e-5, rtol=1e-4)


@torch.inference_mode()
def test_an_all_zero_sub_image_takes_the_padded_path_where_the_model_drops_it(inputs: Any) -> None:
    model = load("sdpa")
    pixels, mask = inputs["pixel_values"].clone(), inputs["pixel_attention_mask"]
    pixels[0, 1] = 0  # the model takes it for a padding image
    assert image_features_unpadded(model, pixels, mask, chunk=4) is None
