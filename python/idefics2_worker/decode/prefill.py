"""The first forward pass of a request: the vision tower, then the prompt through the text model.

generate() sends every sub-image through the vision tower in one batch: with splitting on, the blog's two
980-px pictures are 10 sub-images of 4,900 patches, and their activations set the peak GPU memory. Each
sub-image's features depend on that sub-image alone, so running them in chunks and handing the model the
concatenated features (its `image_hidden_states` input) computes the same function with a lower peak; when the
card has room, one batch is faster (`vision_chunk_for`).

Several queued requests prefill together (`prefill_many`): one request's prefill on an H200 is ~112 ms at bf16, of
which ~40 ms is the host launching kernels, so eight in a row stall the running batch ~0.9 s. In one forward they
share the launches and fill the card: sub-images of one size go through the tower together across requests, and
the prompts, right-padded to the longest, through the text model as one batch. Right padding leaves each row's
positions and causal attention as they are alone (the padding comes after every real token), so a row's cache up
to its length and its last real position's logits are its own prompt's. The batch is capped (`prefill_groups`) so
its memory stays bounded.

On CUDA a prefill may also use cuDNN's attention (ruled out for decode, where it re-plans every step, but one
call per prompt here), compute the quantized linears on the tensor cores (`TensorCoreLinears`), the text model's
norms as one kernel each (`FusedNorms`), each layer's q/k/v and gate/up as one product (`GroupedProjections`) and its
rotary embedding as one kernel (`FusedRotary`).
The unpadded vision tower runs without transformers' masks (`vision_tower`: no host syncs) and, on CUDA, from a
graph per input shape (`vision_graphs`), so the host queues the text model while the GPU runs the tower.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from .prefill_linears import TensorCoreLinears
from .prefill_norms import FusedNorms
from .prefill_projections import GroupedProjections
from .prefill_rotary import FusedRotary
from .vision_graphs import VisionGraphs
from .vision_tower import runs_without_masks, vision_headroom, whole_patch_features

# The vision tower's modules, by name in Idefics2ForConditionalGeneration.
VISION_TOWER = "model.vision_model"
# One batched prefill's bounds: prompts x the longest prompt (the text model's padded rows; eight blog prompts of
# 859 tokens are 6,872), and sub-images (eight blog requests' 10 each: ~73,000 patch rows cut to their pictures,
# 1.5x the rows and a quarter of the attention of one request's 49,000 padded ones, which run whole above the
# headroom). More goes in further groups; `vision_chunk_for` still caps each tower call.
MAX_GROUP_TOKENS = 8192
MAX_GROUP_SUB_IMAGES = 80
# The GEMM dtype of the float32-compute (blog config, 4-bit) layers' prefill, by module-name prefix.
WORKER_FLOAT32_GEMMS = {VISION_TOWER: torch.bfloat16, "": torch.float16}


@dataclass
class PrefillPlan:
    """How a prefill runs: where pictures are preprocessed, the vision tower's chunk (None: all sub-images at once),
    the linears, the attention."""

    vision_chunk: int | None = 1
    linears: TensorCoreLinears | None = None
    # The text model's RMSNorms as one kernel each.
    norms: FusedNorms | None = None
    # Each layer's q/k/v and gate/up as one product, where the fast step joined their weights.
    projections: GroupedProjections | None = None
    # The text model's rotary embedding as one kernel per layer.
    rotary: FusedRotary | None = None
    cudnn_attention: bool = False
    # The pictures are preprocessed on the model's device (request.prompt.prepare_prompt's `on_device`).
    preprocess_on_device: bool = False
    # Each sub-image goes through the vision tower cut to its own patches, sub-images of one size together.
    unpadded_vision: bool = False
    # That tower replayed from CUDA graphs, per shape (state, not a setting: not compared).
    vision_graphs: VisionGraphs | None = field(default=None, compare=False)

    @staticmethod
    def fastest(model: Any) -> PrefillPlan:
        """The fast decoder's plan: on CUDA, tensor-core linears, cuDNN allowed, the vision batch whole when it fits."""
        if model.device.type != "cuda":
            return PrefillPlan()
        return PrefillPlan(
            vision_chunk=None,
            # bf16 GEMMs for the vision tower's float32-compute layers (its ~15,000 patch rows are half the
            # FLOPs), fp16 (TF32's mantissa) for the others: all-bf16 failed the parity check on an H200.
            linears=TensorCoreLinears(model, WORKER_FLOAT32_GEMMS, exact_sums=True),
            norms=FusedNorms(model),
            projections=GroupedProjections(model),
            rotary=FusedRotary(model),
            cudnn_attention=True,
            preprocess_on_device=True,
            unpadded_vision=True,
            vision_graphs=VisionGraphs() if runs_without_masks(model) else None,
        )

    def attention(self) -> AbstractContextManager[Any]:
        if not self.cudnn_attention:
            return nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        first = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION]
        return sdpa_kernel([*first, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH], set_priority=True)

    @contextmanager
    def module_context(self) -> Iterator[None]:
        """The plan's linears, norms and grouped projections in place of the modules' own forwards (the groups'
        last: below MIN_ROWS rows they hand over to the linears'), and its rotary embedding."""
        with ExitStack() as stack:
            for replaced in (self.linears, self.norms, self.projections, self.rotary):
                if replaced is not None:
                    stack.enter_context(replaced.active())
            yield


def vision_chunk_for(model: Any, plan: PrefillPlan, sub_images: int) -> int:
    """The plan's chunk; for "all at once", one when the card's free memory is short (the lower peak wins then)."""
    if plan.vision_chunk is not None:
        return plan.vision_chunk
    if model.device.type == "cuda" and not vision_headroom(model.device):
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


def _valid_sizes(pixel_values: torch.Tensor, pixel_mask: torch.Tensor, patch: int) -> list[tuple[int, int]] | None:
    """Each sub-image's picture as whole patches (height, width in pixels), or None when one is not a top-left
    rectangle of at least one patch, or is all zeros in the model's dtype (the model drops such a sub-image as
    padding); then the padded path runs, as the model would."""
    rows = pixel_mask[:, :, 0].sum(dim=-1)
    cols = pixel_mask[:, 0, :].sum(dim=-1)
    areas = pixel_mask.flatten(1).sum(dim=-1)
    pictured = pixel_values.flatten(1).ne(0).any(dim=-1).to(rows.dtype)
    sizes = []
    counts = torch.stack([rows, cols, areas, pictured]).tolist()  # one read from the device, not four
    for height, width, area, nonzero in zip(*counts, strict=True):
        if not nonzero or area != height * width or height < patch or width < patch:
            return None
        sizes.append((height // patch * patch, width // patch * patch))
    return sizes


Pictures = tuple[torch.Tensor, Any]  # one request's pixel_values [1, sub-images, 3, H, W] and pixel mask (or None)


def _sub_image_masks(pictures: Pictures) -> torch.Tensor | None:
    """The request's pixel masks as booleans [sub-images, H, W], or None where the unpadded path cannot read them."""
    pixel_values, pixel_mask = pictures
    if pixel_mask is None or pixel_values.shape[0] != 1:
        return None
    return pixel_mask[0].bool()


def image_features_unpadded_many(
    model: Any, requests: Sequence[Pictures], chunk: int, graphs: VisionGraphs | None = None
) -> list[torch.Tensor | None]:
    """Each request's features, its sub-images computed on their own patches only; None for a request where that
    does not apply (it takes the padded path).

    The processor pads every sub-image to the largest (for the blog's two 980x735 pictures: 3,640 patches, where
    each of the 8 crops has 945), and the vision tower then attends over the padding under a mask: 2.5x the tokens
    and 3.9x the attention of the pictures themselves. A patch counts only when all its pixels are the picture's
    (the model's own rule), so cutting each sub-image to its whole patches gives the tower the same patches,
    positions and mask, without the padding; sub-images of one size (the crops of a picture, and the same crops of
    other requests' pictures of that size) run together, at most `chunk` per tower call; with `graphs`, replayed
    from a CUDA graph per shape.
    """
    latents = int(model.config.perceiver_config.resampler_n_latents)
    patch = int(model.config.vision_config.patch_size)
    dtype = model.model.dtype
    masks = {request: mask for request, p in enumerate(requests) if (mask := _sub_image_masks(p)) is not None}
    sizes = [
        _valid_sizes(requests[request][0][0].to(dtype), masks[request], patch) if request in masks else None
        for request in range(len(requests))
    ]
    without_masks = runs_without_masks(model)
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for request, request_sizes in enumerate(sizes):
        for index, size in enumerate(request_sizes or ()):
            groups.setdefault(size, []).append((request, index))
    features: list[list[torch.Tensor | None]] = [[None] * len(request_sizes or ()) for request_sizes in sizes]
    failed: set[int] = set()
    for (height, width), members in groups.items():
        for first in range(0, len(members), chunk):
            window = members[first : first + chunk]
            values = [requests[request][0][0, index, :, :height, :width] for request, index in window]
            if without_masks:
                pixels = torch.stack(values)
                output = graphs.features(model, pixels) if graphs is not None else whole_patch_features(model, pixels)
            else:
                cut = [masks[request][index, :height, :width] for request, index in window]
                pixels, mask = torch.stack(values).unsqueeze(0), torch.stack(cut).unsqueeze(0)
                output = model.model.get_image_features(pixels, mask).pooler_output
            # The features come as one row per resampler latent, sub-image after sub-image.
            if output.shape[0] != len(window) * latents:  # it dropped a sub-image it takes for padding (all zeros)
                failed.update(request for request, _ in window)
                continue
            for (request, index), rows in zip(window, output.view(len(window), -1, output.shape[-1]), strict=True):
                features[request][index] = rows
    complete = [sizes[request] is not None and request not in failed for request in range(len(requests))]
    return [
        torch.cat([f for f in request_features if f is not None]) if whole else None
        for whole, request_features in zip(complete, features, strict=True)
    ]


def image_features_unpadded(model: Any, pixel_values: torch.Tensor, pixel_mask: Any, chunk: int) -> torch.Tensor | None:
    """One request's features computed on its sub-images' own patches (`image_features_unpadded_many`), or None."""
    return image_features_unpadded_many(model, [(pixel_values, pixel_mask)], chunk)[0]


def _pictures(inputs: Mapping[str, Any]) -> Pictures | None:
    pixel_values = inputs.get("pixel_values")
    return None if pixel_values is None else (pixel_values, inputs.get("pixel_attention_mask"))


def _sub_image_count(inputs: Mapping[str, Any]) -> int:
    pixel_values = inputs.get("pixel_values")
    return 0 if pixel_values is None else int(pixel_values.shape[1])


def image_features_many(model: Any, inputs_list: Sequence[Mapping[str, Any]], plan: PrefillPlan) -> torch.Tensor | None:
    """Every request's image features, request after request (the order the model fills image tokens in, row by
    row), or None when no request has pictures."""
    pictures = [_pictures(inputs) for inputs in inputs_list]
    present = [p for p in pictures if p is not None]
    if not present:
        return None
    chunk = vision_chunk_for(model, plan, sum(int(values.shape[1]) for values, _ in present))
    unpadded = (
        image_features_unpadded_many(model, present, chunk, plan.vision_graphs)
        if plan.unpadded_vision
        else [None] * len(present)
    )
    features = [
        found if found is not None else image_features_in_chunks(model, values, mask, chunk)
        for (values, mask), found in zip(present, unpadded, strict=True)
    ]
    return torch.cat(features)


def prefill_groups(prompts: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """The prompts (processor inputs) in consecutive groups within one batched prefill's bounds, by index."""
    groups: list[list[int]] = []
    longest = sub_images = 0
    for index, inputs in enumerate(prompts):
        length, count = int(inputs["input_ids"].shape[-1]), _sub_image_count(inputs)
        if groups:
            grown = (len(groups[-1]) + 1) * max(longest, length)
            if grown <= MAX_GROUP_TOKENS and sub_images + count <= MAX_GROUP_SUB_IMAGES:
                groups[-1].append(index)
                longest, sub_images = max(longest, length), sub_images + count
                continue
        groups.append([index])
        longest, sub_images = length, count
    return groups


@functools.lru_cache(maxsize=8)
def _window_on(window: int, device: torch.device) -> torch.Tensor:
    return torch.tensor(window, dtype=torch.long, device=device)


def empty_cache(model: Any) -> DynamicCache:
    """The KV cache the model would make for a prefill, with its sliding-window layers' window already on the model's
    device: each layer would otherwise copy it there on first use, a host sync per layer (32 in idefics2-8b's
    prefill, measured with torch's sync debug mode) that stops the host from queueing the next layers' kernels while
    the GPU runs this one's."""
    cache = DynamicCache(config=model.config)
    layers: list[Any] = list(cache.layers)  # the sliding-window kind's attribute is not on the layers' base class
    for layer in layers:
        window = getattr(layer, "_sliding_window_tensor", None)
        if isinstance(window, torch.Tensor):
            layer._sliding_window_tensor = _window_on(int(window), model.device)
    return cache


def prefill(model: Any, inputs: Any, plan: PrefillPlan) -> tuple[Any, torch.Tensor]:
    """Runs the prompt through the model; returns its KV cache and the float32 logits of the last position."""
    kwargs = dict(inputs)
    kwargs.pop("pixel_values", None)
    kwargs.pop("pixel_attention_mask", None)
    if kwargs["input_ids"].shape[0] == 1:
        # One prompt has no padding (the tokenizer pads a batch to its longest), so its mask is all ones. Without it
        # the model builds the same causal mask but does not first ask the GPU whether every entry is one: a host
        # sync that would wait for the vision tower's queued work before the text model's first launch.
        kwargs.pop("attention_mask", None)
    with torch.inference_mode(), plan.attention(), plan.module_context():
        features = image_features_many(model, [inputs], plan)
        if features is not None:
            kwargs["image_hidden_states"] = features
        output = model(**kwargs, past_key_values=empty_cache(model), use_cache=True, logits_to_keep=1)
    return output.past_key_values, output.logits[:, -1].to(dtype=torch.float32)


def prefill_many(
    model: Any, inputs_list: Sequence[Mapping[str, Any]], plan: PrefillPlan, pad_id: int = 0
) -> tuple[Any, torch.Tensor, list[int]]:
    """Runs several prompts (each the processor's inputs for one request, batch 1) through the model in one forward.

    Returns the batch's KV cache (row i is prompt i's, valid up to its length), each prompt's float32 logits at its
    own last position [N, vocab], and the prompts' lengths.
    """
    lengths = [int(inputs["input_ids"].shape[-1]) for inputs in inputs_list]
    if pad_id == int(model.config.image_token_id):  # the model would put image features there
        pad_id = 0
    device = inputs_list[0]["input_ids"].device
    input_ids = torch.full((len(lengths), max(lengths)), pad_id, dtype=torch.long, device=device)
    for row, (inputs, length) in enumerate(zip(inputs_list, lengths, strict=True)):
        input_ids[row, :length] = inputs["input_ids"][0]
    last = torch.tensor(lengths, device=device) - 1
    with torch.inference_mode(), plan.attention(), plan.module_context():
        features = image_features_many(model, inputs_list, plan)
        extra = {"image_hidden_states": features} if features is not None else {}
        # No padding mask: every real token comes before its row's padding, so the causal mask alone keeps the
        # padding out of every real position (what a row's cache and logits are taken from), and the attention
        # keeps its causal kernels instead of a materialised [N, 1, L, L] mask. The padding's own rows are unused.
        output = model.model(input_ids=input_ids, past_key_values=empty_cache(model), use_cache=True, **extra)
        # Only each row's last real position: the lm_head on N rows rather than N x longest.
        hidden = output.last_hidden_state[torch.arange(len(lengths), device=device), last]
        logits = model.lm_head(hidden)
    return output.past_key_values, logits.to(dtype=torch.float32), lengths
