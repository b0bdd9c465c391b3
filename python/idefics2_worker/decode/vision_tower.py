"""The vision tower and connector for sub-images whose every patch is the picture's, without a host sync.

`get_image_features` serves any batch: it drops all-zero padding images and builds each sub-image's position ids
by boolean indexing, and transformers' mask helpers ask whether a padding mask is all true before they let SDPA run
unmasked. Each of those reads a GPU result on the host: six waits per tower call, while the host should be queueing
the tower's next kernels and the text model's (a prefill's GPU idled ~10-37 ms in the tower on an H200, measured by
scripts/gpu/prefill_timeline.py). The unpadded prefill already knows all of that before the tower runs: each
sub-image is cut to its whole patches, so every patch is valid, none is padding, and the masks would be skipped.
`whole_patch_features` runs the same modules in the same order with those answers filled in, so its features are
the model's own, bit for bit (tests/decode/test_vision_tower.py).
"""

from __future__ import annotations

import functools
from typing import Any

import torch

# Free GPU memory the card must keep to run the vision batch whole (decode/prefill.py) or to capture it in a graph
# (decode/vision_graphs.py); below it the tower runs one sub-image at a time, eagerly.
VISION_HEADROOM_BYTES = 12 * 1024**3

# Attention implementations whose result with no mask is the one transformers gets for an all-true mask: SDPA (the
# helpers return no mask then) and eager (a mask of zeros added to the scores changes nothing).
_MASK_FREE_ATTENTION = frozenset({"sdpa", "eager"})


def runs_without_masks(model: Any) -> bool:
    """Whether `whole_patch_features` computes the model's own features for this model's attention settings."""
    config = model.config
    implementations = {config.vision_config._attn_implementation, config.perceiver_config._attn_implementation}
    return implementations <= _MASK_FREE_ATTENTION


def vision_headroom(device: torch.device) -> bool:
    """Whether `device` is a CUDA device with VISION_HEADROOM_BYTES free."""
    if device.type != "cuda":
        return False
    free, _total = torch.cuda.mem_get_info(device)
    return free >= VISION_HEADROOM_BYTES


@functools.lru_cache(maxsize=64)
def _position_ids(side: int, rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Idefics2VisionEmbeddings' position ids for a grid of rows x cols patches, all valid: the same operations in
    the same dtypes on the same device (the fractions are rounded to the pixels' dtype before they are bucketed)."""
    boundaries = torch.arange(1 / side, 1.0, 1 / side, device=device)
    counts_h = torch.tensor([rows], device=device)
    counts_w = torch.tensor([cols], device=device)
    step_h, step_w = 1.0 / counts_h, 1.0 / counts_w
    h_indices = torch.arange(rows, device=device, dtype=torch.float32)
    w_indices = torch.arange(cols, device=device, dtype=torch.float32)
    fractions_h = torch.clamp(h_indices[None, :] * step_h[:, None], max=(1.0 - 1e-6)).to(dtype)
    fractions_w = torch.clamp(w_indices[None, :] * step_w[:, None], max=(1.0 - 1e-6)).to(dtype)
    buckets_h = torch.bucketize(fractions_h, boundaries, right=True)
    buckets_w = torch.bucketize(fractions_w, boundaries, right=True)
    return (buckets_h[:, :, None] * side + buckets_w[:, None, :]).reshape(1, -1)


def whole_patch_features(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    """The connector's features for `pixels` [sub-images, channels, H, W]: H and W whole patches, every pixel the
    picture's, no sub-image all zeros (the caller checked). One row per resampler latent, sub-image after sub-image,
    as `get_image_features(...).pooler_output` gives them."""
    inner = model.model
    vision, connector = inner.vision_model, inner.connector
    embeddings = vision.embeddings
    pixels = pixels.to(dtype=inner.dtype)
    patch = int(embeddings.patch_size)
    rows, cols = pixels.shape[-2] // patch, pixels.shape[-1] // patch
    # Contiguous here, where transformers keeps the convolution's [C, N] layout: each elementwise op's output takes
    # its first input's layout, so the residual stream kept it through every layer, and each residual add and
    # layer-norm input copy ran PyTorch's strided kernel (~14 ms of a 4-bit prefill's tower on an H200,
    # scripts/gpu/prefill_timeline.py). The values are the same; only where they lie in memory changes.
    hidden = embeddings.patch_embedding(pixels).flatten(2).transpose(1, 2).contiguous()
    positions = _position_ids(int(embeddings.num_patches_per_side), rows, cols, pixels.dtype, pixels.device)
    hidden = hidden + embeddings.position_embedding(positions)
    hidden = vision.encoder(inputs_embeds=hidden, attention_mask=None).last_hidden_state
    hidden = vision.post_layernorm(hidden)
    context = connector.modality_projection(hidden)
    resampler = connector.perceiver_resampler
    latents = resampler.latents.unsqueeze(0).expand((context.shape[0], *resampler.latents.size()))
    for layer in resampler.layers:
        latents = layer(latents, context, attention_mask=None, position_ids=None)
    latents = resampler.norm(latents)
    return latents.view(-1, latents.shape[-1])
