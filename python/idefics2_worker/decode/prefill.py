"""The first forward pass of a request, with the vision tower run a few sub-images at a time.

generate() sends every sub-image through the vision tower in one batch: with splitting on, the blog's two
980-px pictures are 10 sub-images of 4,900 patches, and their activations set the peak GPU memory. Each
sub-image's features depend on that sub-image alone, so running them in chunks and handing the model the
concatenated features (its `image_hidden_states` input) computes the same function with a lower peak.
"""

from __future__ import annotations

from typing import Any

import torch


def image_features_in_chunks(model: Any, pixel_values: torch.Tensor, pixel_mask: Any, chunk: int) -> torch.Tensor:
    features = []
    for first in range(0, pixel_values.shape[1], chunk):
        window = slice(first, first + chunk)
        mask = pixel_mask[:, window] if pixel_mask is not None else None
        output = model.model.get_image_features(pixel_values[:, window], mask)
        features.append(output.pooler_output)
    return torch.cat(features, dim=0)


def prefill(model: Any, inputs: Any, vision_chunk: int) -> tuple[Any, torch.Tensor]:
    """Runs the prompt through the model; returns its KV cache and the float32 logits of the last position."""
    kwargs = dict(inputs)
    pixel_values = kwargs.pop("pixel_values", None)
    pixel_mask = kwargs.pop("pixel_attention_mask", None)
    with torch.inference_mode():
        if pixel_values is not None:
            kwargs["image_hidden_states"] = image_features_in_chunks(model, pixel_values, pixel_mask, vision_chunk)
        output = model(**kwargs, use_cache=True, logits_to_keep=1)
    return output.past_key_values, output.logits[:, -1].to(dtype=torch.float32)
