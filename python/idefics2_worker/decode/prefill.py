"""The first forward pass of a request: the vision tower, then the prompt through the text model.

generate() sends every sub-image through the vision tower in one batch: with splitting on, the blog's two
980-px pictures are 10 sub-images of 4,900 patches, and their activations set the peak GPU memory. Each
sub-image's features depend on that sub-image alone, so running them in chunks and handing the model the
concatenated features (its `image_hidden_states` input) computes the same function with a lower peak; when the
card has room, one batch is faster (`vision_chunk_for`).

On CUDA a prefill may also use cuDNN's attention (ruled out for decode, where it re-plans every step, but one
call per prompt here) and compute the quantized linears on the tensor cores (`TensorCoreLinears`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from .prefill_linears import TensorCoreLinears

# The vision tower's modules, by name in Idefics2ForConditionalGeneration.
VISION_TOWER = "model.vision_model"
# Free GPU memory to keep when the whole vision batch runs at once; below it, one sub-image at a time.
_VISION_HEADROOM_BYTES = 12 * 1024**3


@dataclass
class PrefillPlan:
    """How a prefill runs: where pictures are preprocessed, the vision tower's chunk (None: all sub-images at once),
    the linears, the attention."""

    vision_chunk: int | None = 1
    linears: TensorCoreLinears | None = None
    cudnn_attention: bool = False
    # The pictures are preprocessed on the model's device (request.prompt.prepare_prompt's `on_device`).
    preprocess_on_device: bool = False
    # Each sub-image goes through the vision tower cut to its own patches, sub-images of one size together.
    unpadded_vision: bool = False

    @staticmethod
    def fastest(model: Any) -> PrefillPlan:
        """The fast decoder's plan: on CUDA, tensor-core linears, cuDNN allowed, the vision batch whole when it fits."""
        if model.device.type != "cuda":
            return PrefillPlan()
        return PrefillPlan(
            vision_chunk=None,
            # bf16 GEMMs for the vision tower's float32-compute layers (its ~9,000 patch rows are most of the
            # FLOPs), TF32 for the text model's: all-bf16 failed the parity check on an H200, this passed.
            linears=TensorCoreLinears(model, bf16_for_float32=VISION_TOWER),
            cudnn_attention=True,
            preprocess_on_device=True,
            unpadded_vision=True,
        )

    def attention(self) -> AbstractContextManager[Any]:
        if not self.cudnn_attention:
            return nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        first = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION]
        return sdpa_kernel([*first, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH], set_priority=True)

    def linear_context(self) -> AbstractContextManager[Any]:
        return self.linears.active() if self.linears is not None else nullcontext()


def vision_chunk_for(model: Any, plan: PrefillPlan, sub_images: int) -> int:
    """The plan's chunk; for "all at once", one when the card's free memory is short (the lower peak wins then)."""
    if plan.vision_chunk is not None:
        return plan.vision_chunk
    if model.device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(model.device)
        if free < _VISION_HEADROOM_BYTES:
            return 1
    return max(1, sub_images)


def image_features_in_chunks(model: Any, pixel_values: torch.Tensor, pixel_mask: Any, chunk: int) -> torch.Tensor:
    features = []
    for first in range(0, pixel_values.shape[1], chunk):
        window = slice(first, first + chunk)
        mask = pixel_mask[:, window] if pixel_mask is not None else None
        output = model.model.get_image_features(pixel_values[:, window], mask)
        features.append(output.pooler_output)
    return torch.cat(features, dim=0)


def _valid_sizes(pixel_mask: torch.Tensor, patch: int) -> list[tuple[int, int]] | None:
    """Each sub-image's picture as whole patches (height, width in pixels), or None when one is not a top-left
    rectangle of at least one patch (then the padded path runs, as the model would)."""
    rows = pixel_mask[:, :, 0].sum(dim=-1)
    cols = pixel_mask[:, 0, :].sum(dim=-1)
    areas = pixel_mask.flatten(1).sum(dim=-1)
    sizes = []
    for height, width, area in zip(rows.tolist(), cols.tolist(), areas.tolist(), strict=True):
        if area != height * width or height < patch or width < patch:
            return None
        sizes.append((height // patch * patch, width // patch * patch))
    return sizes


def image_features_unpadded(model: Any, pixel_values: torch.Tensor, pixel_mask: Any, chunk: int) -> torch.Tensor | None:
    """The features of each sub-image computed on its own patches only, or None where that does not apply.

    The processor pads every sub-image to the largest (980x980, 4,900 patches, where a crop of the blog's pictures
    has 910), and the vision tower then attends over the padding under a mask: 3.3x the tokens and 7x the attention
    of the pictures themselves. A patch counts only when all its pixels are the picture's (the model's own rule), so
    cutting each sub-image to its whole patches gives the tower the same patches, positions and mask, without the
    padding; sub-images of one size (the crops of a picture) run together.
    """
    if pixel_mask is None or pixel_values.shape[0] != 1:
        return None
    patch = int(model.config.vision_config.patch_size)
    latents = int(model.config.perceiver_config.resampler_n_latents)
    values, masks = pixel_values[0], pixel_mask[0].bool()
    sizes = _valid_sizes(masks, patch)
    if sizes is None:
        return None
    groups: dict[tuple[int, int], list[int]] = {}
    for index, size in enumerate(sizes):
        groups.setdefault(size, []).append(index)
    features: list[torch.Tensor | None] = [None] * len(sizes)
    for (height, width), members in groups.items():
        for first in range(0, len(members), chunk):
            window = members[first : first + chunk]
            pixels = values[window, :, :height, :width].unsqueeze(0)
            mask = masks[window, :height, :width].unsqueeze(0)
            # The features come as one row per resampler latent, sub-image after sub-image.
            output = model.model.get_image_features(pixels, mask).pooler_output
            if output.shape[0] != len(window) * latents:  # it dropped a sub-image it takes for padding (all zeros)
                return None
            for position, rows in enumerate(output.view(len(window), -1, output.shape[-1])):
                features[window[position]] = rows
    return torch.cat([feature for feature in features if feature is not None])


def prefill(model: Any, inputs: Any, plan: PrefillPlan) -> tuple[Any, torch.Tensor]:
    """Runs the prompt through the model; returns its KV cache and the float32 logits of the last position."""
    kwargs = dict(inputs)
    pixel_values = kwargs.pop("pixel_values", None)
    pixel_mask = kwargs.pop("pixel_attention_mask", None)
    with torch.inference_mode(), plan.attention(), plan.linear_context():
        if pixel_values is not None:
            chunk = vision_chunk_for(model, plan, int(pixel_values.shape[1]))
            features = image_features_unpadded(model, pixel_values, pixel_mask, chunk) if plan.unpadded_vision else None
            if features is None:
                features = image_features_in_chunks(model, pixel_values, pixel_mask, chunk)
            kwargs["image_hidden_states"] = features
        output = model(**kwargs, use_cache=True, logits_to_keep=1)
    return output.past_key_values, output.logits[:, -1].to(dtype=torch.float32)
