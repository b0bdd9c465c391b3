"""One decode step of the text model for a batch of sequences, each in its own KV-cache slot; on CUDA, replayed
from a captured CUDA graph.

The reference spends most of each token launching kernels one by one from Python (DESIGN.md: ~6% of the
bandwidth bound on an H100). Capturing the step once and replaying it removes that overhead. The step is the
text model's own computation, module by module (the same norms, projections, rotary embedding and MLP
modules, so the same bitsandbytes kernels), with two changes that do not change the function:
the KV cache is preallocated per slot, with attention masked to each sequence's own positions, and the
query heads sharing a KV head are attended as one group instead of repeating K and V.

On CUDA with Triton (or when `kernels` is forced, as the CPU tests do under Triton's interpreter), the work
between the projections runs as a few fused kernels (`step_kernels`) and the quantized projections as the
worker's own kernels (`decode_linears`), each rounding where the module code rounds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.functional import scaled_dot_product_attention

from . import step_kernels, triton_support
from .decode_linears import DecodeLinears

CACHE_GRANULE = 256


def _round_up(value: int, step: int) -> int:
    return (value + step - 1) // step * step


def _bucket(count: int, limit: int) -> int:
    size = 1
    while size < count:
        size *= 2
    return min(size, limit)


def _norms_in_order(text: Any) -> list[Any]:
    """Every RMSNorm in the order the step applies them: each layer's two, then the final one."""
    norms = [n for layer in text.layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]
    return [*norms, text.norm]


def _fusable(text: Any, norms: list[Any]) -> bool:
    """Whether the layers are the Mistral ones the fused kernels reproduce (RMSNorm, SiLU MLP, default rotary)."""
    return (
        getattr(text.config, "hidden_act", None) == "silu"
        and all(type(norm).__name__.endswith("RMSNorm") and hasattr(norm, "variance_epsilon") for norm in norms)
        and all(hasattr(layer.mlp, name) for layer in text.layers for name in ("gate_proj", "up_proj", "down_proj"))
    )


class DecodeGraphs:
    """KV slots plus the step; `run(count)` advances slots 0..count-1 by one token each."""

    def __init__(self, model: Any, max_batch: int, use_graphs: bool, kernels: bool | None = None) -> None:
        text = model.model.text_model
        config = text.config
        self.model = model
        self.text = text
        self.max_batch = max_batch
        self.use_graphs = use_graphs and model.device.type == "cuda"
        self.device = model.device
        self.dtype = text.embed_tokens.weight.dtype
        first = text.layers[0].self_attn
        self.head_dim = int(first.head_dim)
        self.kv_heads = int(config.num_key_value_heads)
        self.heads = int(config.num_attention_heads)
        self.scaling = float(first.scaling)
        self.sliding_window = getattr(config, "sliding_window", None)
        self._rotary: Callable[..., Any] = sys.modules[type(first).__module__].apply_rotary_pos_emb
        if kernels is None:
            kernels = triton_support.available(self.device)
        self.linears = DecodeLinears(model, kernels)
        self._norms = _norms_in_order(text)
        self.fused = kernels and _fusable(text, self._norms)
        self.slots = 0
        self.length = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool: Any = None
        self.tokens = torch.zeros(max_batch, dtype=torch.long, device=self.device)
        self.positions = torch.zeros(max_batch, dtype=torch.long, device=self.device)
        self.rows = torch.arange(max_batch, device=self.device)
        # Index and value tensors on the device: a graph cannot capture a host-to-device copy.
        self._zeros = torch.zeros(max_batch, dtype=torch.long, device=self.device)
        self._true = torch.ones((), dtype=torch.bool, device=self.device)
        self.mask = torch.zeros(max_batch, 1, 1, 0, dtype=torch.bool, device=self.device)

    def supports(self, total_tokens: int) -> bool:
        """Whether a sequence of this many tokens stays within what the step computes exactly."""
        return self.sliding_window is None or total_tokens <= int(self.sliding_window)

    def ensure(self, slots: int, length: int) -> None:
        """Grows the cache to at least `slots` rows of `length` positions, keeping what is stored."""
        slots = max(self.slots, _bucket(slots, self.max_batch))
        length = max(self.length, _round_up(length, CACHE_GRANULE))
        if slots == self.slots and length == self.length:
            return
        shape = (slots, self.kv_heads, length, self.head_dim)
        keys, values = [], []
        for index in range(len(self.text.layers)):
            key = torch.zeros(shape, dtype=self.dtype, device=self.device)
            value = torch.zeros(shape, dtype=self.dtype, device=self.device)
            if self.keys:
                key[: self.slots, :, : self.length].copy_(self.keys[index])
                value[: self.slots, :, : self.length].copy_(self.values[index])
            keys.append(key)
            values.append(value)
        mask = torch.zeros(self.max_batch, 1, 1, length, dtype=torch.bool, device=self.device)
        mask[:, :, :, : self.length].copy_(self.mask)
        self.keys, self.values, self.mask = keys, values, mask
        self.slots, self.length = slots, length
        self._drop_graphs()

    def release(self) -> None:
        """Frees the cache and graphs (when no sequence is running) so idle memory is the model's alone."""
        self.keys, self.values = [], []
        self.mask = torch.zeros(self.max_batch, 1, 1, 0, dtype=torch.bool, device=self.device)
        self.slots = self.length = 0
        self._drop_graphs()

    def store_prefill(self, slot: int, cache: Any, length: int) -> None:
        """Copies a prefill's cache (transformers' DynamicCache) into a slot and opens its mask to `length`."""
        for index, layer in enumerate(cache.layers):
            self.keys[index][slot, :, :length].copy_(layer.keys[0, :, :length])
            self.values[index][slot, :, :length].copy_(layer.values[0, :, :length])
        self.mask[slot].zero_()
        self.mask[slot, :, :, :length] = True

    def move(self, source: int, target: int) -> None:
        """Moves a sequence's slot so running sequences stay in the lowest rows."""
        for key, value in zip(self.keys, self.values, strict=True):
            key[target].copy_(key[source])
            value[target].copy_(value[source])
        self.mask[target].copy_(self.mask[source])

    def park(self, first: int, count: int) -> None:
        """Points unused rows first..count-1 at position 0 of their own slot, so a padded step touches nothing live."""
        if first < count:
            self.tokens[first:count] = 0
            self.positions[first:count] = 0
            self.mask[first:count] = False
            self.mask[first:count, :, :, 0] = True

    def run(self, count: int) -> torch.Tensor:
        """One step for rows 0..count-1 (tokens/positions set by the caller); float32 logits of shape [count, V]."""
        size = _bucket(count, self.slots)
        self.park(count, size)
        if not self.use_graphs:
            with torch.inference_mode():
                return self._step(size)[:count]
        captured = self._graphs.get(size)
        if captured is None:
            captured = self._capture(size)
        graph, logits = captured
        graph.replay()
        return logits[:count]

    def _capture(self, size: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        # Warm-up and capture run the step on the live buffers: they write the same K/V the replay below
        # writes, at the positions the caller has set, so nothing stored is disturbed.
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.inference_mode(), torch.cuda.stream(stream):
            self._step(size)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, pool=self._pool):
            logits = self._step(size)
        self._graphs[size] = (graph, logits)
        return graph, logits

    def _embed(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Opens each row's mask at its position; the rows' token embeddings, rotary cos / sin, and mask."""
        rows, positions = self.rows[:size], self.positions[:size]
        zeros = self._zeros[:size]
        self.mask.index_put_((rows, zeros, zeros, positions), self._true)
        hidden = self.text.embed_tokens(self.tokens[:size, None])
        cos, sin = self.text.rotary_emb(hidden, positions[:, None])
        return hidden, cos, sin, self.mask[:size]

    def _step(self, size: int) -> torch.Tensor:
        if self.fused:
            return self._fused_step(size)
        text = self.text
        hidden, cos, sin, mask = self._embed(size)
        with self.linears.capturable():
            for index, layer in enumerate(text.layers):
                residual = hidden
                hidden = layer.input_layernorm(hidden)
                hidden = self._attention(layer.self_attn, index, hidden, (cos, sin), mask)
                hidden = residual + hidden
                residual = hidden
                hidden = residual + layer.mlp(layer.post_attention_layernorm(hidden))
            hidden = text.norm(hidden)
            return self.model.lm_head(hidden[:, 0]).float()

    def _attention(
        self,
        attn: Any,
        index: int,
        hidden: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor,
    ) -> torch.Tensor:
        size, dim = hidden.shape[0], self.head_dim
        rows, positions = self.rows[:size], self.positions[:size]
        query = attn.q_proj(hidden).view(size, 1, self.heads, dim).transpose(1, 2)
        key = attn.k_proj(hidden).view(size, 1, self.kv_heads, dim).transpose(1, 2)
        value = attn.v_proj(hidden).view(size, 1, self.kv_heads, dim).transpose(1, 2)
        query, key = self._rotary(query, key, *rotary)
        self.keys[index][rows, :, positions] = key[:, :, 0]
        self.values[index][rows, :, positions] = value[:, :, 0]
        return self._attend(attn, index, query, mask)

    def _attend(self, attn: Any, index: int, query: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention over each row's cache slot and the output projection; query holds [rows, heads, (1,) dim]."""
        size, dim = query.shape[0], self.head_dim
        # Query head h uses KV head h // groups (transformers' repeat_kv), so the heads of one KV head
        # are a contiguous group: attend them as a group of queries at the same position.
        grouped = query.reshape(size, self.kv_heads, self.heads // self.kv_heads, dim)
        keys, values = self.keys[index][:size], self.values[index][:size]
        out = scaled_dot_product_attention(grouped, keys, values, attn_mask=mask, scale=self.scaling)
        return attn.o_proj(out.reshape(size, 1, self.heads * dim))

    def _fused_step(self, size: int) -> torch.Tensor:
        # The same computation as _step; each residual add is fused with the norm that follows it.
        text = self.text
        hidden, cos, sin, mask = self._embed(size)
        positions = self.positions[:size]
        norms = self._norms
        residual, normed = step_kernels.add_rms_norm(hidden, None, norms[0].weight, norms[0].variance_epsilon)
        with self.linears.capturable():
            for index, layer in enumerate(text.layers):
                attn = layer.self_attn
                query = step_kernels.rotary_into_cache(
                    attn.q_proj(normed),
                    attn.k_proj(normed),
                    attn.v_proj(normed),
                    cos,
                    sin,
                    self.keys[index],
                    self.values[index],
                    positions,
                )
                out = self._attend(attn, index, query, mask)
                norm = norms[2 * index + 1]
                residual, normed = step_kernels.add_rms_norm(residual, out, norm.weight, norm.variance_epsilon)
                mlp = layer.mlp
                out = mlp.down_proj(step_kernels.silu_mul(mlp.gate_proj(normed), mlp.up_proj(normed)))
                norm = norms[2 * index + 2]
                residual, normed = step_kernels.add_rms_norm(residual, out, norm.weight, norm.variance_epsilon)
            return self.model.lm_head(normed[:, 0]).float()

    def _drop_graphs(self) -> None:
        # A memory pool goes away with the last graph that used it: new graphs need a new pool.
        self._graphs.clear()
        self._pool = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
